"""Modality presence in multimodal episodes: random dropout for training, fixed conditions
for evaluation.

Both act only on the ``"mask"`` leaf of the episode inputs (``[..., N, M]``, 1 = present,
column order :data:`mmjax.nn.multimodal.MODALITIES`: image, strokes); the data are left as
they are, since :class:`mmjax.nn.multimodal.MultimodalEncoder` ignores masked values. They
take one episode (mask ``[N, M]``) or a batch of them (``[T, N, M]``) and are pure JAX, so
they run inside the jitted train / evaluation step. With concrete inputs, a wrong mask shape
or a sample with every modality off raises ``ValueError``; traced masks are checked by
shape only.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.episodes import Episode

MODALITIES = ("image", "strokes")
CONDITIONS = ("both", "image_only", "strokes_only", "missing_in_support", "missing_in_query")


def _check_mask(mask: chex.Array, reference: chex.Array, where: str) -> None:
    shape, ref = tuple(np.shape(mask)), tuple(np.shape(reference))
    expected = ref[: len(shape) - 1] + (len(MODALITIES),)
    if len(shape) < 2 or len(ref) < len(shape) - 1 or shape != expected:
        raise ValueError(
            f"{where}['mask'] has shape {shape}; expected [..., samples, {len(MODALITIES)}] "
            f"matching the leading axes of {where}['image'] {ref}, i.e. {expected}"
        )
    if not isinstance(mask, jax.core.Tracer):
        off = ~np.any(np.asarray(mask) != 0, axis=-1)
        if np.any(off):
            raise ValueError(
                f"{where}['mask'] has {int(off.sum())} samples with every modality off (first "
                f"at index {tuple(int(i) for i in np.argwhere(off)[0])}); each sample needs at "
                "least one modality present"
            )


def _inputs_mask(inputs: chex.ArrayTree, where: str) -> chex.Array:
    if not isinstance(inputs, dict) or "mask" not in inputs or "image" not in inputs:
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"{where} must be a dict with 'image', 'strokes' and 'mask' (a multimodal episode "
            f"from omniglot_multimodal_splits); got {got}"
        )
    _check_mask(inputs["mask"], inputs["image"], where)
    return inputs["mask"]


def _check_episodes(episodes: Episode) -> None:
    if not isinstance(episodes, Episode):
        raise ValueError(f"episodes must be an Episode; got {type(episodes).__name__}")


def check_rate(rate: float) -> None:
    """Raises ``ValueError`` unless ``0 <= rate <= 1 - 1/M`` (``M`` = 2 modalities: 0.5)."""
    limit = 1 - 1 / len(MODALITIES)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= limit:
        raise ValueError(
            f"rate={rate!r} must be a number in [0, {limit}]: with {len(MODALITIES)} modalities "
            "a sample cannot lose each one with a higher probability without losing all"
        )


def dropout_mask(key: chex.PRNGKey, mask: chex.Array, *, rate: float) -> jax.Array:
    """Drops present modalities of each sample, each with probability ``rate``, never all.

    Systematic sampling over the present modalities in a random order: with ``P`` present,
    a uniform ``v`` and ``r = min(rate, (P - 1) / P)``, the ``i``-th one is dropped when
    ``[v + i r, v + (i + 1) r)`` holds an integer. Each present modality is then dropped
    with probability exactly ``r`` and at most ``P - 1`` are dropped. For two modalities
    (``rate <= 0.5``) a sample with both present loses exactly one with probability
    ``2 * rate``; a sample with one present keeps it.

    Args:
      key: PRNG key.
      mask: ``[..., M]`` presence (bool or 0/1).
      rate: drop probability, ``0 <= rate <= 1 - 1/M``.

    Returns:
      The new mask, same shape and dtype as ``mask``, never 1 where ``mask`` is 0.
    """
    check_rate(rate)
    mask = jnp.asarray(mask)
    present = mask != 0
    count = jnp.sum(present, axis=-1, keepdims=True).astype(jnp.float32)  # [..., 1]
    r = jnp.minimum(rate, (count - 1) / jnp.maximum(count, 1))
    order_key, offset_key = jax.random.split(key)
    scores = jnp.where(present, jax.random.uniform(order_key, mask.shape), 2.0)
    rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1).astype(jnp.float32)
    offset = jax.random.uniform(offset_key, mask.shape[:-1] + (1,))
    dropped = present & (jnp.floor(offset + (rank + 1) * r) - jnp.floor(offset + rank * r) > 0)
    # Guard against rounding at r = (P - 1) / P: keep the first-ranked modality.
    all_dropped = jnp.all(dropped | ~present, axis=-1, keepdims=True)
    dropped = dropped & ~(all_dropped & (rank == 0))
    return jnp.where(dropped, 0, mask).astype(mask.dtype)


def modality_dropout(key: chex.PRNGKey, episodes: Episode, *, rate: float) -> Episode:
    """Applies :func:`dropout_mask` to the support and query masks of ``episodes``.

    Args:
      key: PRNG key.
      episodes: `Episode` (or a batch) whose inputs are dicts with a ``"mask"`` leaf
        ``[..., N, M]``.
      rate: per-sample, per-modality drop probability, ``0 <= rate <= 1 - 1/M``.

    Returns:
      ``episodes`` with new masks (other leaves unchanged).
    """
    check_rate(rate)
    _check_episodes(episodes)
    support_key, query_key = jax.random.split(key)
    support = _inputs_mask(episodes.support_inputs, "support_inputs")
    query = _inputs_mask(episodes.query_inputs, "query_inputs")
    return episodes._replace(
        support_inputs=dict(
            episodes.support_inputs, mask=dropout_mask(support_key, support, rate=rate)
        ),
        query_inputs=dict(episodes.query_inputs, mask=dropout_mask(query_key, query, rate=rate)),
    )


def condition_masks(condition: str, *, missing: str = "strokes") -> tuple[np.ndarray, np.ndarray]:
    """``[M]`` support and query presence factors of an evaluation condition.

    Args:
      condition: one of :data:`CONDITIONS`.
      missing: the modality absent in ``"missing_in_support"`` / ``"missing_in_query"``.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition={condition!r} is not one of {CONDITIONS}")
    if missing not in MODALITIES:
        raise ValueError(f"missing={missing!r} is not one of {MODALITIES}")
    both = np.ones(len(MODALITIES), np.float32)
    without = (np.array(MODALITIES) != missing).astype(np.float32)
    only = {m: (np.array(MODALITIES) == m).astype(np.float32) for m in MODALITIES}
    return {
        "both": (both, both),
        "image_only": (only["image"], only["image"]),
        "strokes_only": (only["strokes"], only["strokes"]),
        "missing_in_support": (without, both),
        "missing_in_query": (both, without),
    }[condition]


def apply_condition(episodes: Episode, condition: str, *, missing: str = "strokes") -> Episode:
    """Sets the modality masks of an evaluation condition.

    The data's own mask (e.g. a drawing without a stroke file) is kept; the condition
    switches modalities off on top of it:

    * ``"both"``: unchanged;
    * ``"image_only"`` / ``"strokes_only"``: the other modality off in support and query;
    * ``"missing_in_support"``: ``missing`` off in the support set only;
    * ``"missing_in_query"``: ``missing`` off in the query set only.

    Args:
      episodes: `Episode` (or a batch) with dict inputs holding ``"mask"`` ``[..., N, M]``.
      condition: one of :data:`CONDITIONS`.
      missing: the modality removed by the two ``missing_in_*`` conditions.

    Returns:
      ``episodes`` with the new masks.

    Raises:
      ValueError: unknown condition or modality, bad mask shape, or (concrete masks) a
        sample left with no modality.
    """
    support_factor, query_factor = condition_masks(condition, missing=missing)
    return mask_episodes(episodes, support_factor, query_factor)


def mask_episodes(
    episodes: Episode, support_presence: chex.Array, query_presence: chex.Array
) -> Episode:
    """Multiplies the support / query masks by ``[M]`` presence factors (0 or 1).

    `apply_condition` with the factors of :func:`condition_masks`; the factors may be traced,
    so one compiled function serves every condition.

    Raises:
      ValueError: bad mask or factor shape, or (concrete masks) a sample left with no modality.
    """
    _check_episodes(episodes)
    for name, factor in (
        ("support_presence", support_presence),
        ("query_presence", query_presence),
    ):
        if tuple(np.shape(factor)) != (len(MODALITIES),):
            raise ValueError(
                f"{name} has shape {tuple(np.shape(factor))}; expected [{len(MODALITIES)}]"
            )
    support = _inputs_mask(episodes.support_inputs, "support_inputs")
    query = _inputs_mask(episodes.query_inputs, "query_inputs")
    new_support = (jnp.asarray(support) * support_presence).astype(jnp.asarray(support).dtype)
    new_query = (jnp.asarray(query) * query_presence).astype(jnp.asarray(query).dtype)
    _check_mask(new_support, episodes.support_inputs["image"], "support_inputs")
    _check_mask(new_query, episodes.query_inputs["image"], "query_inputs")
    return episodes._replace(
        support_inputs=dict(episodes.support_inputs, mask=new_support),
        query_inputs=dict(episodes.query_inputs, mask=new_query),
    )
