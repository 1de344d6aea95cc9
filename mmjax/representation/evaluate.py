"""Few-shot and cross-modal evaluation of a frozen representation.

* :func:`protonet_accuracies`: Prototypical-Network episodes (Snell et al. 2017) on the
  frozen embedding ``embed(params, inputs) -> [B, D]``: class means of the support
  embeddings, nearest prototype by squared Euclidean distance; one accuracy per episode
  (summarise with :func:`mmjax.train.confidence_interval`).
* :func:`cross_modal_retrieval`: every drawing's image (image-only mask) retrieves among the
  stroke sequences (strokes-only mask) of all drawings of the split by cosine similarity;
  recall@k is the fraction whose own drawing's strokes are among the top ``k``.
* :func:`fit_cca_on_drawings` and :class:`CCAEmbed`: the deep CCA protocol (Andrew et al.
  2013): a linear CCA of the two views' outputs fitted on meta-train drawings, and the embedding
  that projects each view onto its canonical directions before fusing (the masked mean of the
  present views), used for both evaluations above.

Conv-4 normalises with batch statistics, so embeddings depend on the batch they are computed
in: episodes embed support and query together (as in training ProtoNets); retrieval embeds
the drawings in fixed batches of a fixed random order, mixing classes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.episodes import classes_and_examples, sample_episodes, validate_episode_spec
from mmjax.meta.protonet import embed_episode, prototype_logits, prototypes
from mmjax.representation.cca import CCAProjection, apply_cca_projection, fit_cca_projection

Embed = Callable[[chex.ArrayTree, dict], jax.Array]


@functools.partial(jax.jit, static_argnames=("embed", "batch_size", "ways", "shots", "queries"))
def _episode_accuracies(embed, params, data, key, *, batch_size, ways, shots, queries):
    episodes = sample_episodes(
        key, data, batch_size=batch_size, ways=ways, shots=shots, queries=queries
    )

    def one(episode):
        support, query = embed_episode(embed, params, episode)
        logits = prototype_logits(query, prototypes(support, episode.support_labels, ways))
        return jnp.mean(jnp.argmax(logits, axis=-1) == episode.query_labels)

    return jax.vmap(one)(episodes)


def protonet_accuracies(
    embed: Embed,
    params: chex.ArrayTree,
    data: chex.ArrayTree,
    key: chex.PRNGKey,
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 5,
    num_episodes: int = 600,
    batch_size: int = 50,
) -> np.ndarray:
    """Query accuracy of ``num_episodes`` ProtoNet episodes on the frozen embedding.

    Args:
      embed: ``(params, inputs) -> [B, D]`` (e.g. ``Objective.embed``); hashable, static.
      params: its parameters.
      data: class-grouped pytree (meta-test split), leaves ``[C, E, ...]``.
      key: PRNG key of the episodes.
      ways, shots, queries: episode shape.
      num_episodes: episodes in total (a multiple of ``batch_size`` is not needed).
      batch_size: episodes per jitted call.

    Returns:
      ``[num_episodes]`` float64 accuracies.
    """
    num_classes, num_examples = classes_and_examples(data)
    validate_episode_spec(num_classes, num_examples, ways=ways, shots=shots, queries=queries)
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"num_episodes={num_episodes!r} must be an int >= 1")
    batch_size = min(batch_size, num_episodes)
    chunks = -(-num_episodes // batch_size)
    out = [
        _episode_accuracies(
            embed, params, data, k, batch_size=batch_size, ways=ways, shots=shots, queries=queries
        )
        for k in jax.random.split(key, chunks)
    ]
    return np.concatenate(jax.device_get(out)).astype(np.float64)[:num_episodes]


def embed_drawings(
    embed: Embed,
    params: chex.ArrayTree,
    data: chex.ArrayTree,
    presence_factor: Sequence[float],
    *,
    order: np.ndarray,
    batch_size: int = 256,
) -> np.ndarray:
    """Embeds every drawing of ``data`` (flattened ``[C * E]`` in ``order``) with the modality
    mask multiplied by ``presence_factor: [M]``; returns ``[C * E, D]`` in the original order."""
    total = len(order)
    batch_size = min(batch_size, total)
    # pad (by wrapping around) to whole batches: one compiled shape for every batch
    padded = np.concatenate([order, order[: (-total) % batch_size]])
    flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:])[padded], data)
    flat["mask"] = flat["mask"] * np.asarray(presence_factor, np.float32)
    jitted = jax.jit(embed)
    parts = [
        np.asarray(jitted(params, jax.tree.map(lambda x, s=s: x[s : s + batch_size], flat)))
        for s in range(0, len(padded), batch_size)
    ]
    embeddings = np.concatenate(parts)[:total]
    restored = np.empty_like(embeddings)
    restored[order] = embeddings
    return restored


def recall_at_k(queries: chex.Array, gallery: chex.Array, ks: Sequence[int] = (1, 5)) -> dict:
    """Recall@k of paired retrieval: row ``i`` of ``queries: [n, D]`` should find row ``i`` of
    ``gallery: [n, D]`` (cosine similarity; ties count against it).

    Returns:
      ``{"recall@k": float, ..., "median_rank": float}`` (rank 1 = first).
    """
    q, g = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    if q.ndim != 2 or q.shape != g.shape:
        raise ValueError(
            f"queries has shape {q.shape} and gallery {g.shape}; expected equal [n, D] shapes"
        )
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    similarity = q @ g.T
    own = np.diagonal(similarity)[:, None]
    rank = np.sum(similarity >= own, axis=1)  # counts itself: rank 1 = retrieved first
    result = {f"recall@{k}": float(np.mean(rank <= k)) for k in ks}
    result["median_rank"] = float(np.median(rank))
    return result


def cross_modal_retrieval(
    embed: Embed,
    params: chex.ArrayTree,
    data: chex.ArrayTree,
    key: chex.PRNGKey,
    *,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 256,
) -> dict:
    """Image -> strokes retrieval over all drawings of ``data`` whose strokes are present.

    Args:
      embed: ``(params, inputs) -> [B, D]``, called with image-only and strokes-only masks.
      params: its parameters.
      data: class-grouped ``{"image": [C, E, H, W, 1], "strokes": [C, E, L, 3],
        "mask": [C, E, 2]}``.
      key: PRNG key of the (class-mixing) order in which drawings are embedded.
      ks: the recall cut-offs.
      batch_size: drawings per embedding call.

    Returns:
      :func:`recall_at_k` of the image-only embeddings against the strokes-only embeddings,
      plus ``"gallery"`` (the number of candidates).
    """
    num_classes, num_examples = classes_and_examples(data)
    order = np.asarray(jax.random.permutation(key, num_classes * num_examples))
    images = embed_drawings(embed, params, data, (1.0, 0.0), order=order, batch_size=batch_size)
    strokes = embed_drawings(embed, params, data, (0.0, 1.0), order=order, batch_size=batch_size)
    has_strokes = np.asarray(data["mask"]).reshape(-1, 2)[:, 1] > 0
    result = recall_at_k(images[has_strokes], strokes[has_strokes], ks)
    result["gallery"] = int(has_strokes.sum())
    return result


def _single_modality(mask: jax.Array, modality: int) -> jax.Array:
    """``mask: [B, 2]`` with every column but ``modality`` zeroed (False for a bool mask)."""
    keep = jnp.arange(mask.shape[-1]) == modality
    return jnp.where(keep, mask, jnp.zeros_like(mask))


def fit_cca_on_drawings(
    embed: Embed,
    params: chex.ArrayTree,
    data: chex.ArrayTree,
    key: chex.PRNGKey,
    *,
    num_drawings: int = 4096,
    dim: int | None = None,
    reg: float = 1e-3,
    batch_size: int = 256,
) -> CCAProjection:
    """Fits :func:`mmjax.representation.cca.fit_cca_projection` on the image-only and
    strokes-only embeddings of a random sample of drawings (with both modalities) of ``data``.

    Args:
      embed: ``(params, inputs) -> [B, D]``; with one modality present it must return that
        modality's own embedding (as :class:`~mmjax.representation.MultimodalEmbedding` does).
      params: its parameters.
      data: class-grouped ``{"image": [C, E, H, W, 1], "strokes": [C, E, L, 3],
        "mask": [C, E, 2]}`` (the meta-train split).
      key: PRNG key of the sample (drawn without replacement, classes mixed in every batch).
      num_drawings: sample size (at most the number of drawings with both modalities).
      dim: canonical directions kept (default: all).
      reg: CCA ridge.
      batch_size: drawings per embedding call.

    Returns:
      :class:`~mmjax.representation.cca.CCAProjection` (``[D, dim]`` weights per view).
    """
    flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), data)
    both = np.flatnonzero(np.all(flat["mask"] != 0, axis=-1))
    if isinstance(num_drawings, bool) or not isinstance(num_drawings, int) or num_drawings < 2:
        raise ValueError(f"num_drawings={num_drawings!r} must be an int >= 2")
    num_drawings = min(num_drawings, len(both))
    if num_drawings < 2:
        raise ValueError(f"data has {len(both)} drawings with both modalities; CCA needs >= 2")
    chosen = both[np.asarray(jax.random.permutation(key, len(both)))[:num_drawings]]
    sample = jax.tree.map(lambda x: x[chosen][None], flat)  # one "class" of the sampled drawings
    order = np.arange(num_drawings)
    image = embed_drawings(embed, params, sample, (1.0, 0.0), order=order, batch_size=batch_size)
    strokes = embed_drawings(embed, params, sample, (0.0, 1.0), order=order, batch_size=batch_size)
    return fit_cca_projection(image, strokes, dim=dim, reg=reg)


@dataclasses.dataclass(frozen=True)
class CCAEmbed:
    """The embedding in the fitted canonical space of a two-view ``embed``.

    Call ``(params, inputs) -> [B, k]`` with ``params = {"encoder": embed's params, "cca":
    CCAProjection}``: embeds the image and the strokes separately (each alone in the mask),
    projects each with :func:`~mmjax.representation.cca.apply_cca_projection` and returns the
    mean of the projections of the modalities present in ``inputs["mask"]: [B, 2]`` (zeros
    where none is). Hashable (a frozen dataclass of ``embed``), so usable as a static
    ``embed`` of :func:`protonet_accuracies` and :func:`cross_modal_retrieval`.
    """

    embed: Embed

    def __call__(self, params: dict, inputs: dict) -> jax.Array:
        mask = jnp.asarray(inputs["mask"])
        image = self.embed(params["encoder"], dict(inputs, mask=_single_modality(mask, 0)))
        strokes = self.embed(params["encoder"], dict(inputs, mask=_single_modality(mask, 1)))
        image, strokes = apply_cca_projection(params["cca"], image, strokes)
        keep = mask != 0  # [B, 2]
        total = jnp.where(keep[:, :1], image, 0.0) + jnp.where(keep[:, 1:], strokes, 0.0)
        count = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1)
        return total / count.astype(total.dtype)
