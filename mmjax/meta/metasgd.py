"""Meta-SGD (Li et al. 2017): MAML with per-parameter inner learning rates meta-learned too.

Meta-parameters are ``{"model": params, "inner_lr": rates}`` where ``rates`` has the structure
and shapes of ``params``. The inner loop is :func:`mmjax.meta.maml.adapt` with the pytree of
rates (``φ = θ - α ∘ ∇L_support(θ)``), and the outer gradient flows into both ``θ`` and ``α``.
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from typing_extensions import Unpack

from mmjax.data.episodes import Episode
from mmjax.meta import common, maml
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner, register

#: Meta-SGD's defaults for the settings not given.
DEFAULTS: common.InnerLoopSettings = {"inner_lr": 0.4, "num_inner_steps": 1}


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


def metasgd_learner(model: nn.Module, **settings: Unpack[common.InnerLoopSettings]) -> MetaLearner:
    """Meta-SGD on ``model`` (``apply(params, inputs) -> [batch, ways]`` logits).

    ``settings``: :class:`~mmjax.meta.common.InnerLoopSettings`, with the defaults
    ``inner_lr=0.4`` and ``num_inner_steps=1``. ``inner_lr`` is the initial rate: a scalar
    for every parameter, or a pytree shaped like the model's parameters (scalar or
    full-shape leaves), checked at ``init``.
    """
    inner = common.check_learner_settings(settings, defaults=DEFAULTS)
    inner_lr = inner.inner_lr
    loss_fn = common.classification_loss(model.apply)

    def init(key: chex.PRNGKey, example_inputs: chex.ArrayTree) -> Params:
        params = model.init(key, example_inputs)
        return {"model": params, "inner_lr": init_inner_lr(inner_lr, params)}

    per_task = functools.partial(learned_rates_task_loss, loss_fn=loss_fn)
    train_task = functools.partial(
        per_task, num_steps=inner.num_inner_steps, first_order=inner.first_order
    )
    return common.loss_gradient_learner(
        "metasgd",
        init,
        train_task=train_task,
        eval_task=functools.partial(per_task, num_steps=inner.eval_num_inner_steps),
        task_batching=inner.task_batching,
    )


register("metasgd", metasgd_learner)
