"""One meta-training step for any :class:`~mmjax.meta.learner.MetaLearner`, on one or many devices.

:func:`make_step` builds ``step(params, opt_state, episodes[, meta_step]) -> (params,
opt_state, metrics)``: the learner's ``meta_grad`` on a task batch (every episode leaf
``[tasks, ...]``), then one optax update. On one device it is one ``jax.jit``; with
``mesh`` the task batch is sharded over the mesh's devices (``jit`` with shardings, XLA
inserts the all-reduce of the gradient); with ``pmap_axis_name`` it is a ``jax.pmap`` over
a leading device axis with the gradient averaged by ``lax.pmean``. All compute the same
update up to floating-point summation order. :func:`meta_update` is the step's body, for
loops that build their own ``jit`` (the trainer samples its episodes inside it).
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax.data.episodes import Episode
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner
from mmjax.meta.parallel import TASK_AXIS


def keep_if_finite(
    params: Params,
    opt_state: optax.OptState,
    new_params: Params,
    new_opt_state: optax.OptState,
    grads: Params,
    metrics: dict,
) -> tuple[Params, optax.OptState, dict]:
    """The new ``(params, opt_state)`` if ``grads`` and ``metrics["loss"]`` are finite, else
    the old ones.

    Returns ``(params, opt_state, metrics)`` with ``metrics["finite"]`` a scalar bool.
    """
    checked = (grads, metrics["loss"]) if "loss" in metrics else grads
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(checked)]))

    def pick(new, old):
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

    metrics = {**metrics, "finite": finite}
    return pick(new_params, params), pick(new_opt_state, opt_state), metrics


def meta_update(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    params: Params,
    opt_state: optax.OptState,
    episodes: Episode,
    meta_step: chex.Array | None = None,
    *,
    skip_nonfinite: bool = False,
    axis_name: str | None = None,
) -> tuple[Params, optax.OptState, dict]:
    """One meta-step of ``learner``: ``-> (params, opt_state, metrics)`` (not compiled).

    Args:
      learner: any learner; ``meta_step`` (the traced step index) reaches its ``meta_grad``
        when ``learner.takes_meta_step``.
      optimizer: the meta-optimizer.
      params, opt_state: the meta-parameters and the optimizer state.
      episodes: a task batch, every leaf ``[tasks, ...]``.
      skip_nonfinite: keep the input ``params`` and ``opt_state`` when the gradient or
        ``metrics["loss"]`` is not finite (:func:`keep_if_finite`; ``metrics["finite"]``).
      axis_name: inside ``pmap``, average the gradient and metrics over this axis first.
    """
    step_kwargs = {"meta_step": meta_step} if learner.takes_meta_step else {}
    grads, metrics = learner.meta_grad(params, episodes, **step_kwargs)
    if axis_name is not None:
        grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if not skip_nonfinite:
        return new_params, new_opt_state, metrics
    return keep_if_finite(params, opt_state, new_params, new_opt_state, grads, metrics)


def make_step(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    pmap_axis_name: str | None = None,
    jit: bool = True,
    donate: bool = True,
    skip_nonfinite: bool = False,
) -> Callable:
    """Builds ``step(params, opt_state, episodes[, meta_step]) -> (params, opt_state, metrics)``.

    The step takes ``meta_step`` (the meta-step index, for annealed schedules) as a fourth
    argument exactly when ``learner.takes_meta_step``.

    Args:
      learner: any :class:`~mmjax.meta.learner.MetaLearner` (``make_learner(name, model)``).
      optimizer: the optax meta-optimizer.
      mesh: shard the task batch over this mesh's axis ``"tasks"``
        (:func:`mmjax.meta.parallel.task_mesh`); ``params``/``opt_state`` are replicated.
        Place host arrays with :func:`mmjax.meta.parallel.place_tasks` and
        :func:`~mmjax.meta.parallel.place_replicated` (needed multi-host). The batch must
        be a multiple of ``mesh.size``; the learner's ``task_batching`` should be
        ``"vmap"`` (``"auto"`` is, on several devices): a scanned axis is not split.
      pmap_axis_name: instead, ``jax.pmap`` over a leading device axis of this name:
        ``params``/``opt_state`` replicated (``flax.jax_utils.replicate``), episode leaves
        ``[devices, tasks_per_device, ...]`` (:func:`mmjax.meta.parallel.shard_for_pmap`).
      jit: compile the single-device step with ``jax.jit`` (``mesh`` and ``pmap`` always
        compile).
      donate: donate ``params`` and ``opt_state`` (their buffers are reused for the
        outputs): the arrays passed in are deleted by the call, so keep only the returned
        ones. If a step can go wrong and the input parameters must survive it, pass
        ``donate=False`` or ``skip_nonfinite=True``.
      skip_nonfinite: when the meta-gradient or ``metrics["loss"]`` is not finite, return
        the input ``params`` and ``opt_state`` unchanged (as the trainer's
        ``nan_policy="skip"``) with ``metrics["finite"]`` false; costs one reduction over
        the gradient. Safe with ``donate``: the last good parameters are returned.

    Raises:
      TypeError: ``learner`` is not a ``MetaLearner``, or ``optimizer`` has no
        ``init``/``update``.
      ValueError: both ``mesh`` and ``pmap_axis_name``; ``donate``, ``skip_nonfinite`` or
        ``jit`` not a bool.
    """
    if not isinstance(learner, MetaLearner):
        raise TypeError(
            f"learner must be a MetaLearner (see make_learner); got {type(learner).__name__}"
        )
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}"
        )
    for name, value in (("donate", donate), ("skip_nonfinite", skip_nonfinite), ("jit", jit)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool; got {value!r}")
    if mesh is not None and pmap_axis_name is not None:
        raise ValueError("give mesh (jit with shardings) or pmap_axis_name (pmap), not both")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")

    def body(params, opt_state, episodes, meta_step=None):
        return meta_update(
            learner, optimizer, params, opt_state, episodes, meta_step,
            skip_nonfinite=skip_nonfinite, axis_name=pmap_axis_name,
        )  # fmt: skip

    if learner.takes_meta_step:
        step = body
    else:
        step = lambda params, opt_state, episodes: body(params, opt_state, episodes)
    donated = (0, 1) if donate else ()
    if pmap_axis_name is not None:
        return jax.pmap(step, axis_name=pmap_axis_name, donate_argnums=donated)
    if mesh is not None:
        replicated = NamedSharding(mesh, P())
        by_task = NamedSharding(mesh, P(TASK_AXIS))
        extra = (replicated,) if learner.takes_meta_step else ()
        return jax.jit(
            step,
            in_shardings=(replicated, replicated, by_task) + extra,
            out_shardings=(replicated, replicated, replicated),
            donate_argnums=donated,
        )
    return jax.jit(step, donate_argnums=donated) if jit else step
