"""Reptile (Nichol et al. 2018): first-order meta-learning by moving towards adapted weights.

For each task the inner loop runs ``num_inner_steps`` SGD (or Adam) steps from the
meta-parameters ``θ``, giving ``φ``: during meta-training on the task's support ∪ query set
(``adapt_on_query=True``, the default: Reptile has no query set, every example of a training
task is training data) or on its support set alone, and at evaluation always on the support
set alone. The *pseudo-gradient* ``θ - φ``, averaged over the task batch (mapped by
``task_batching``, :mod:`mmjax.meta.task_batching`), is handed to the optax
meta-optimizer: outer SGD with learning rate ``ε`` is then exactly Reptile's interpolation
``θ ← θ + ε (φ̄ - θ)``. No gradient flows through the inner loop.
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from typing_extensions import Unpack

from mmjax.data.episodes import Episode
from mmjax.meta import common
from mmjax.meta import task_batching as batching
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner, register

INNER_OPTIMIZERS = ("sgd", "adam")


def check_inner_optimizer(inner_optimizer: str) -> None:
    """Raises ``ValueError`` listing :data:`INNER_OPTIMIZERS` when ``inner_optimizer`` is not one."""
    if inner_optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"inner_optimizer={inner_optimizer!r} is not one of {INNER_OPTIMIZERS}")


def adapt_with_optimizer(
    params: Params,
    inputs: chex.ArrayTree,
    labels: chex.Array,
    *,
    loss_fn: common.LossFn,
    inner_lr: float,
    num_steps: int,
    inner_optimizer: str = "sgd",
) -> tuple[Params, chex.Array]:
    """Reptile's inner loop: ``num_steps`` of SGD or Adam by ``lax.scan``, first order.

    Args:
      params: meta-parameters.
      inputs: support inputs, leaves ``[support_size, ...]``.
      labels: ``[support_size]``.
      loss_fn: ``(params, inputs, labels) -> (loss, metrics)``.
      inner_lr: inner step size.
      num_steps: inner steps.
      inner_optimizer: ``"sgd"`` or ``"adam"`` (fresh Adam state per task).

    Returns:
      ``(adapted_params, losses)`` with ``losses: [num_steps]``. No gradient flows through
      the inner loop (Reptile is first order).
    """
    check_inner_optimizer(inner_optimizer)
    if inner_optimizer == "sgd":
        common.check_settings(inner_lr=inner_lr, num_steps=num_steps)
        common.check_inner_lr(inner_lr, params)
        common.check_support(inputs, labels)
        loop = common.SGDLoop(loss_fn, inner_lr, num_steps, first_order=True)
        return common.sgd_steps(loop, params, inputs, labels)
    optimizer = optax.adam(inner_lr)

    def step(carry, _):
        current, state = carry
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(current, inputs, labels)
        updates, state = optimizer.update(jax.lax.stop_gradient(grads), state, current)
        return (optax.apply_updates(current, updates), state), loss

    (adapted, _), losses = jax.lax.scan(
        step, (params, optimizer.init(params)), None, length=num_steps
    )
    return adapted, losses


def pseudo_gradient(
    params: Params,
    episodes: Episode,
    *,
    loss_fn: common.LossFn,
    inner_lr: float,
    num_steps: int,
    inner_optimizer: str = "sgd",
    adapt_on_query: bool = False,
    task_batching: str | int = "auto",
) -> tuple[Params, dict]:
    """Reptile's meta-update direction ``mean_tasks(θ - φ_task)`` and batch metrics.

    Args:
      params: meta-parameters ``θ``.
      episodes: task batch, leading ``[tasks]`` axis on every leaf.
      adapt_on_query: run the inner loop on support ∪ query (Reptile has no query set: every
        example of a meta-training task is training data); otherwise on the support set.
      task_batching: how the task batch is mapped
        (:func:`mmjax.meta.task_batching.resolve_task_batching`).

    Returns:
      ``(grads, metrics)``: ``grads`` shaped like ``params``; metrics are the query
      ``loss_fn`` metrics after adaptation (means over tasks) plus ``support_loss``.
    """

    adapt = functools.partial(
        adapt_with_optimizer, loss_fn=loss_fn, inner_lr=inner_lr, num_steps=num_steps,
        inner_optimizer=inner_optimizer,
    )  # fmt: skip

    def per_task(params: Params, episode: Episode):
        if adapt_on_query:
            join = lambda s, q: jnp.concatenate([s, q], axis=0)
            episode = episode._replace(
                support_inputs=jax.tree.map(join, episode.support_inputs, episode.query_inputs),
                support_labels=join(episode.support_labels, episode.query_labels),
            )
        scored = common.adapt_and_score(adapt, loss_fn, params, episode)
        return jax.tree.map(jnp.subtract, params, scored.adapted), scored.metrics

    deltas, metrics = batching.map_over_tasks(per_task, params, episodes, task_batching)
    mean = functools.partial(jnp.mean, axis=0)
    return jax.tree.map(mean, deltas), jax.tree.map(mean, metrics)


def reptile_learner(
    model: nn.Module,
    *,
    inner_optimizer: str = "sgd",
    adapt_on_query: bool = True,
    **settings: Unpack[common.InnerLoopSettings],
) -> MetaLearner:
    """Reptile on ``model`` (``apply(params, inputs) -> [batch, ways]`` logits).

    Args:
      model: Flax classifier.
      inner_optimizer: ``"sgd"`` or ``"adam"``.
      adapt_on_query: during meta-training, adapt on support ∪ query (Nichol et al. train on
        more shots than they test with); evaluation always adapts on the support set only.
      **settings: the inner loop (:class:`~mmjax.meta.common.InnerLoopSettings`, without
        ``first_order``: Reptile is first order).
    """
    inner = common.check_learner_settings(settings, first_order=False)
    check_inner_optimizer(inner_optimizer)
    loss_fn = common.classification_loss(model.apply)
    loop = dict(loss_fn=loss_fn, inner_lr=inner.inner_lr, inner_optimizer=inner_optimizer)
    eval_adapt = functools.partial(
        adapt_with_optimizer, num_steps=inner.eval_num_inner_steps, **loop
    )

    def eval_per_task(params: Params, episode: Episode) -> dict:
        adapted, _ = eval_adapt(params, episode.support_inputs, episode.support_labels)
        return loss_fn(adapted, episode.query_inputs, episode.query_labels)[1]

    grad = functools.partial(pseudo_gradient, num_steps=inner.num_inner_steps, **loop)
    return MetaLearner(
        name="reptile",
        init=model.init,
        meta_grad=functools.partial(
            grad, adapt_on_query=adapt_on_query, task_batching=inner.task_batching
        ),
        evaluate=functools.partial(
            batching.map_over_tasks, eval_per_task, task_batching=inner.task_batching
        ),
    )


register("reptile", reptile_learner)
