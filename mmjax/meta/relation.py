"""Relation Networks (Sung et al. 2018): a learned similarity between queries and classes.

The trainer model's ``encoder`` embeds support and query examples; each class is the mean of
its support embeddings (the paper sums; for 1-shot they coincide up to scale). A relation
module (an MLP) maps each concatenated pair ``[query embedding, class embedding]`` to a logit
``s``; the relation score is ``σ(s) ∈ [0, 1]``.

Objectives (``objective=``):

* ``"mse"``: squared error between the scores and one-hot targets, as in the paper.
* ``"triplet"``: the design documents' ranking loss ``-log σ(s(a, p) - s(a, n))`` averaged
  over each query ``a``, its class ``p`` and every other class ``n``. It is applied to the
  relation *logits* ``s`` (the scores ``σ(s)`` would cap the margin at 1).

Meta-parameters: ``{"encoder": encoder variables, "relation": relation-module variables}``.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.data.episodes import Episode
from mmjax.meta import common
from mmjax.meta import task_batching as batching
from mmjax.meta.learner import MetaLearner, Params, register
from mmjax.meta.protonet import embed_episode, prototypes

OBJECTIVES = ("mse", "triplet")


class RelationModule(nn.Module):
    """MLP over ``[..., 2d]`` concatenated pairs -> ``[...]`` relation logits.

    Attributes:
      hidden_sizes: hidden layer widths (ReLU); the paper uses one layer of 8 units.
    """

    hidden_sizes: Sequence[int] = (8,)

    @nn.compact
    def __call__(self, pairs: chex.Array) -> jax.Array:
        x = pairs
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
        return nn.Dense(1)(x)[..., 0]


def relation_logits(
    relation: nn.Module, relation_params: Params, queries: chex.Array, classes: chex.Array
) -> jax.Array:
    """Relation logits ``[num_queries, ways]`` of ``queries: [q, d]`` and ``classes: [ways, d]``."""
    q, w = queries.shape[0], classes.shape[0]
    pairs = jnp.concatenate(
        [
            jnp.broadcast_to(queries[:, None, :], (q, w, queries.shape[-1])),
            jnp.broadcast_to(classes[None, :, :], (q, w, classes.shape[-1])),
        ],
        axis=-1,
    )  # [q, ways, 2d]
    return relation.apply(relation_params, pairs)


def relation_loss(logits: chex.Array, labels: chex.Array, *, objective: str) -> jax.Array:
    """Scalar loss of relation ``logits: [q, ways]`` for integer ``labels: [q]``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
    ways = logits.shape[-1]
    one_hot = jax.nn.one_hot(labels, ways, dtype=logits.dtype)
    if objective == "mse":
        return jnp.mean(jnp.sum((jax.nn.sigmoid(logits) - one_hot) ** 2, axis=-1))
    positive = jnp.sum(logits * one_hot, axis=-1, keepdims=True)  # [q, 1]
    margins = -jax.nn.log_sigmoid(positive - logits)  # [q, ways]
    return jnp.mean(jnp.sum(margins * (1 - one_hot), axis=-1) / max(ways - 1, 1))


def relation_task_loss(
    params: Params,
    episode: Episode,
    *,
    embed: Callable[[Params, chex.ArrayTree], jax.Array],
    relation: nn.Module,
    ways: int,
    objective: str,
) -> tuple[chex.Array, dict]:
    """Loss and metrics (``loss``, ``accuracy``, ``mean_score``) of one episode."""
    support, query = embed_episode(embed, params["encoder"], episode)
    classes = prototypes(support, episode.support_labels, ways)
    logits = relation_logits(relation, params["relation"], query, classes)
    loss = relation_loss(logits, episode.query_labels, objective=objective)
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == episode.query_labels)
    return loss, {
        "loss": loss,
        "accuracy": accuracy,
        "mean_score": jnp.mean(jax.nn.sigmoid(logits)),
    }


def relation_scores(
    params: Params, episode: Episode, *, model: nn.Module, hidden_sizes: Sequence[int] = (8,)
) -> jax.Array:
    """Relation scores ``σ(s) ∈ [0, 1]``, shape ``[num_queries, ways]``, of one episode."""
    embed = getattr(model, "encoder", model).apply
    support, query = embed_episode(embed, params["encoder"], episode)
    classes = prototypes(support, episode.support_labels, model.num_classes)
    logits = relation_logits(
        RelationModule(tuple(hidden_sizes)), params["relation"], query, classes
    )
    return jax.nn.sigmoid(logits)


def relation_learner(
    model: nn.Module,
    *,
    objective: str = "mse",
    hidden_sizes: Sequence[int] = (8,),
    ways: int | None = None,
    task_batching: str | int = "auto",
) -> MetaLearner:
    """Relation Network on ``model.encoder`` (or ``model`` itself).

    Args:
      model: the trainer's ``Classifier`` (its encoder embeds; the head is unused).
      objective: ``"mse"`` (paper) or ``"triplet"``.
      hidden_sizes: relation-module hidden widths.
      ways: classes per episode (default ``model.num_classes``).
      task_batching: how the task batch is mapped
        (:func:`mmjax.meta.task_batching.resolve_task_batching`).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
    ways = ways if ways is not None else getattr(model, "num_classes", None)
    if not isinstance(ways, int) or ways < 1:
        raise ValueError(f"ways must be an int >= 1 (or model.num_classes); got {ways!r}")
    embedder = getattr(model, "encoder", model)
    relation = RelationModule(tuple(hidden_sizes))
    per_task = functools.partial(
        relation_task_loss, embed=embedder.apply, relation=relation, ways=ways, objective=objective
    )

    def init(key: chex.PRNGKey, example_inputs: chex.ArrayTree) -> Params:
        encoder_key, relation_key = jax.random.split(key)
        encoder = embedder.init(encoder_key, example_inputs)
        width = jax.eval_shape(embedder.apply, encoder, example_inputs).shape[-1]
        return {
            "encoder": encoder,
            "relation": relation.init(relation_key, jnp.zeros((1, 2 * width))),
        }

    batching.resolve_task_batching(task_batching)
    return common.loss_gradient_learner(
        "relationnet", init, train_task=per_task, eval_task=per_task, task_batching=task_batching
    )


register("relationnet", relation_learner)
