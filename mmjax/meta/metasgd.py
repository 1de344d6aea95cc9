"""Meta-SGD (Li et al. 2017): MAML with per-parameter inner learning rates meta-learned too.

Meta-parameters are ``{"model": params, "inner_lr": rates}`` where ``rates`` has the structure
and shapes of ``params``. The inner loop is :func:`mmjax.meta.maml.adapt` with the pytree of
rates (``φ = θ - α ∘ ∇L_support(θ)``), and the outer gradient flows into both ``θ`` and ``α``.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.data.episodes import Episode
from mmjax.meta import common, maml, task_batching as batching
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner, register


def init_inner_lr(inner_lr: float | Params, params: Params) -> Params:
    """Full per-parameter rates shaped like ``params`` from a scalar or a (checked) pytree.

    A pytree may hold scalar leaves (one rate per tensor), which are broadcast. Every
    initial rate must be finite and ``> 0`` (the meta-learned ones may later turn negative).

    Raises:
      ValueError: the pytree's structure or a leaf's shape differs from ``params``, or a rate
        is not finite and ``> 0`` (the message names the leaf, see
        :func:`mmjax.meta.common.check_inner_lr`).
      TypeError: ``inner_lr`` is not a number or a pytree of numbers.
    """
    common.check_settings(inner_lr=inner_lr, num_steps=0)  # type, and a scalar's value
    common.check_inner_lr(inner_lr, params)
    if common.is_scalar(inner_lr):
        return jax.tree.map(lambda p: jnp.full(jnp.shape(p), inner_lr, jnp.result_type(p)), params)
    lr_by_path = dict(jax.tree_util.tree_leaves_with_path(inner_lr))
    return jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.broadcast_to(
            jnp.asarray(lr_by_path[path], jnp.result_type(p)), jnp.shape(p)
        ),
        params,
    )


def learned_rates_task_loss(
    meta_params: Params, episode: Episode, **settings
) -> tuple[chex.Array, dict]:
    """:func:`mmjax.meta.maml.task_loss` of one task with the rates ``meta_params["inner_lr"]``.

    ``settings``: ``loss_fn``, ``num_steps``, ``first_order``; scalar loss and metrics.
    """
    return maml.task_loss(
        meta_params["model"],
        episode,
        inner_lr=meta_params["inner_lr"],
        signed_rates=True,  # learned rates may turn negative (they learn the direction too)
        **settings,
    )


def metasgd_learner(
    model: nn.Module,
    *,
    inner_lr: float | Params = 0.4,
    num_inner_steps: int = 1,
    eval_num_inner_steps: int | None = None,
    first_order: bool = False,
    task_batching: str | int = "auto",
) -> MetaLearner:
    """Meta-SGD on ``model`` (a Flax classifier).

    Args:
      model: ``apply(params, inputs) -> [batch, ways]`` logits.
      inner_lr: initial rate: a scalar for every parameter, or a pytree shaped like the
        model's parameters (scalar or full-shape leaves), checked at ``init``.
      num_inner_steps: inner steps during meta-training.
      eval_num_inner_steps: inner steps at evaluation (default ``num_inner_steps``).
      first_order: stop gradients through the inner gradients.
      task_batching: how the task batch is mapped
        (:func:`mmjax.meta.task_batching.resolve_task_batching`).
    """
    eval_steps = common.check_learner_settings(
        inner_lr=inner_lr, num_inner_steps=num_inner_steps,
        eval_num_inner_steps=eval_num_inner_steps, task_batching=task_batching,
    )  # fmt: skip
    loss_fn = common.classification_loss(model.apply)

    def init(key: chex.PRNGKey, example_inputs: chex.ArrayTree) -> Params:
        params = model.init(key, example_inputs)
        return {"model": params, "inner_lr": init_inner_lr(inner_lr, params)}

    def per_task(steps: int, **settings) -> Callable:
        return functools.partial(
            learned_rates_task_loss, loss_fn=loss_fn, num_steps=steps, **settings
        )

    grad_task = per_task(num_inner_steps, first_order=first_order)
    return MetaLearner(
        name="metasgd",
        init=init,
        meta_grad=functools.partial(
            batching.grad_over_tasks, grad_task, task_batching=task_batching
        ),
        evaluate=functools.partial(
            batching.metrics_per_task, per_task(eval_steps), task_batching=task_batching
        ),
    )


register("metasgd", metasgd_learner)
