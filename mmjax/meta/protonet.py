"""Prototypical Networks (Snell et al. 2017): nearest class mean in an embedding space.

Prototypes are the class means of the support embeddings; a query's logits are the negative
squared Euclidean distances to the prototypes (``distance="euclidean"``) or the cosine
similarities (``distance="cosine"``), multiplied by ``scale`` (fixed, or meta-learned with
``learn_scale=True``). The embedding network is the trainer model's ``encoder`` (or the model
itself when it has none), so any encoder works, multimodal fused embeddings included.

Meta-parameters: ``{"encoder": encoder variables, "scale": []}``.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmjax.data.episodes import Episode
from mmjax.meta import common
from mmjax.meta import task_batching as batching
from mmjax.meta.learner import MetaLearner, Params, register

DISTANCES = ("euclidean", "cosine")


def check_distance(distance: str) -> None:
    """Raises ``ValueError`` listing the valid names when ``distance`` is unknown."""
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {', '.join(DISTANCES)}")


def embed_episode(embed, encoder_params: Params, episode: Episode) -> tuple[jax.Array, jax.Array]:
    """Support ``[ways * shots, d]`` and query ``[ways * queries, d]`` embeddings of one episode.

    Both sets go through the encoder as one batch (as in Snell et al.'s code), so an encoder
    with batch statistics normalises them alike.
    """
    num_support = jax.tree.leaves(episode.support_inputs)[0].shape[0]
    inputs = jax.tree.map(
        lambda s, q: jnp.concatenate([s, q], axis=0), episode.support_inputs, episode.query_inputs
    )
    embeddings = embed(encoder_params, inputs)
    return embeddings[:num_support], embeddings[num_support:]


def prototypes(embeddings: chex.Array, labels: chex.Array, ways: int) -> jax.Array:
    """Class means of ``embeddings: [support, d]`` by ``labels: [support]`` -> ``[ways, d]``."""
    one_hot = jax.nn.one_hot(labels, ways, dtype=embeddings.dtype)  # [support, ways]
    counts = jnp.maximum(one_hot.sum(axis=0), 1)[:, None]
    return one_hot.T @ embeddings / counts


def prototype_logits(
    queries: chex.Array, protos: chex.Array, *, distance: str = "euclidean", scale: float = 1.0
) -> jax.Array:
    """Logits ``[num_queries, ways]`` of ``queries: [num_queries, d]`` against ``protos: [ways, d]``.

    ``euclidean``: ``-scale * ||q - c||²``; ``cosine``: ``scale * <q, c> / (|q| |c|)``.
    """
    check_distance(distance)
    if distance == "euclidean":
        squared = (
            jnp.sum(queries**2, axis=-1, keepdims=True)
            - 2 * queries @ protos.T
            + jnp.sum(protos**2, axis=-1)[None, :]
        )
        return -scale * squared
    normalise = lambda x: x * jax.lax.rsqrt(jnp.sum(x**2, axis=-1, keepdims=True) + 1e-12)
    return scale * normalise(queries) @ normalise(protos).T


def prototype_task_loss(
    params: Params,
    episode: Episode,
    *,
    embed: Callable[[Params, chex.ArrayTree], jax.Array],
    ways: int,
    distance: str,
    learn_scale: bool,
) -> tuple[chex.Array, dict]:
    """Query cross-entropy and accuracy of one episode (``embed(encoder_vars, x) -> [n, d]``)."""
    scale = params["scale"] if learn_scale else jax.lax.stop_gradient(params["scale"])
    support, query = embed_episode(embed, params["encoder"], episode)
    protos = prototypes(support, episode.support_labels, ways)
    logits = prototype_logits(query, protos, distance=distance, scale=scale)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, episode.query_labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == episode.query_labels)
    return loss, {"loss": loss, "accuracy": accuracy}


def _embedder(model: nn.Module) -> nn.Module:
    return getattr(model, "encoder", model)


def protonet_learner(
    model: nn.Module,
    *,
    distance: str = "euclidean",
    scale: float = 1.0,
    learn_scale: bool = False,
    ways: int | None = None,
    task_batching: str | int = "auto",
) -> MetaLearner:
    """Prototypical Networks on ``model.encoder`` (or ``model`` itself).

    Args:
      model: the trainer's ``Classifier`` (its ``encoder`` embeds; the head is unused) or
        any module mapping inputs to ``[batch, d]`` embeddings.
      distance: ``"euclidean"`` or ``"cosine"``.
      scale: logit scale (initial value when learned); must be > 0.
      learn_scale: meta-learn ``scale`` (as for cosine similarity in Chen et al. 2019).
      ways: classes per episode (default ``model.num_classes``).
      task_batching: how the task batch is mapped
        (:func:`mmjax.meta.task_batching.resolve_task_batching`).
    """
    check_distance(distance)
    if not scale > 0:
        raise ValueError(f"scale must be > 0; got {scale!r}")
    ways = ways if ways is not None else getattr(model, "num_classes", None)
    if not isinstance(ways, int) or ways < 1:
        raise ValueError(f"ways must be an int >= 1 (or model.num_classes); got {ways!r}")
    embedder = _embedder(model)
    per_task = functools.partial(
        prototype_task_loss,
        embed=embedder.apply,
        ways=ways,
        distance=distance,
        learn_scale=learn_scale,
    )

    def init(key: chex.PRNGKey, example_inputs: chex.ArrayTree) -> Params:
        return {
            "encoder": embedder.init(key, example_inputs),
            "scale": jnp.asarray(scale, jnp.float32),
        }

    batching.resolve_task_batching(task_batching)
    return common.loss_gradient_learner(
        "protonet" if distance == "euclidean" else "protonet_cosine",
        init,
        train_task=per_task,
        eval_task=per_task,
        task_batching=task_batching,
    )


register("protonet", protonet_learner)
