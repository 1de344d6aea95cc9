"""Model-Agnostic Meta-Learning (Finn et al. 2017) as pure functions over pytrees.

The inner loop is SGD on the support set, run by ``lax.scan`` with ``jax.grad`` inside,
so the meta-gradient is second order by default; ``first_order=True`` stops the gradient
through the inner gradients (FOMAML), and ``meta_gradient`` picks the other estimators of
:mod:`mmjax.meta.meta_gradients` (truncated, implicit, annealed). A task batch is mapped
over by :mod:`mmjax.meta.task_batching`.

:func:`maml_learner` is the :class:`~mmjax.meta.learner.MetaLearner` (registered as
``"maml"``); :func:`adapt`, :func:`task_loss`, :func:`meta_loss` and :func:`meta_grad` are
its pieces, usable on any loss function (:mod:`mmjax.meta.common`).
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax.numpy as jnp
from typing_extensions import Unpack

from mmjax.data.episodes import Episode
from mmjax.meta import batch_norm_eval, common, meta_gradients
from mmjax.meta import task_batching as batching
from mmjax.meta.common import LossFn, Params, classification_loss
from mmjax.meta.learner import MetaLearner, register

__all__ = ["adapt", "classification_loss", "maml_learner", "meta_grad", "meta_loss", "task_loss"]


def adapt(
    params: Params,
    inputs: chex.ArrayTree,
    labels: chex.Array,
    *,
    loss_fn: LossFn,
    inner_lr: float | Params,
    num_steps: int,
    first_order: bool = False,
    remat: bool = False,
    unroll: int | bool = 1,
    signed_rates: bool = False,
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
) -> tuple[Params, chex.Array]:
    """Runs ``num_steps`` of SGD on ``loss_fn`` from ``params`` (MAML's inner loop).

    Args:
      params: initial parameters (the meta-parameters).
      inputs: support inputs, leaves ``[support_size, ...]``.
      labels: ``[support_size]`` labels.
      loss_fn: ``(params, inputs, labels) -> (loss, metrics)``.
      inner_lr: scalar, or a pytree of per-parameter rates shaped like ``params``.
      num_steps: number of inner SGD steps (0 returns ``params`` unchanged).
      first_order: stop gradients through the inner gradients (FOMAML).
      remat: rematerialise each inner step in the backward pass (``jax.checkpoint``), so
        memory stays flat as ``num_steps`` grows, at the cost of recomputation.
      unroll: ``lax.scan`` unroll factor of the inner loop (``True``: fully unrolled). Same
        result; fully unrolled, XLA's ``cost_analysis()`` counts every inner step (a rolled
        loop's body is counted once); ``benchmarks/maml_orders.py --unroll`` times it.
      signed_rates: accept negative per-parameter rates (Meta-SGD's meta-learned ones); by
        default every concrete rate must be finite and ``> 0`` (NaN/inf are always refused).
      meta_gradient: ``"exact"``, ``"first_order"``, ``"truncated"``, ``"implicit"`` or a
        :class:`~mmjax.meta.meta_gradients.MetaGradient` (annealing needs :func:`task_loss`).

    Returns:
      ``(adapted_params, losses)`` with ``losses: [num_steps]`` the support loss before
      each step (shape ``[0]`` with ``num_steps=0``: nothing is adapted).
    """
    common.check_settings(inner_lr=inner_lr, num_steps=num_steps, signed=signed_rates)
    common.check_inner_lr(inner_lr, params, signed=signed_rates)
    loop = common.SGDLoop(loss_fn, inner_lr, num_steps, first_order, remat, unroll)
    if _is_exact_by_name(meta_gradient):
        common.check_support(inputs, labels)
        return common.sgd_steps(loop, params, inputs, labels)
    spec = meta_gradients.meta_gradient_spec(meta_gradient, first_order=first_order)
    if spec.annealed:
        raise ValueError("first_order_until needs the meta-step: use task_loss(meta_step=...)")
    meta_gradients.check_num_steps(spec, num_steps)
    if spec.mode == "implicit":
        return meta_gradients.adapt_implicit(
            params, inputs, labels, loss_fn=loss_fn, inner_lr=inner_lr, num_steps=num_steps,
            lam=spec.lam, cg_steps=spec.cg_steps, cg_tol=spec.cg_tol, unroll=unroll,
        )  # fmt: skip
    common.check_support(inputs, labels)
    losses = []
    for steps, segment_first_order in meta_gradients.inner_segments(spec, num_steps):
        segment = loop._replace(num_steps=steps, first_order=segment_first_order)
        params, segment_losses = common.sgd_steps(segment, params, inputs, labels)
        losses.append(segment_losses)
    return params, jnp.concatenate(losses) if len(losses) > 1 else losses[0]


def task_loss(
    params: Params,
    episode: Episode,
    *,
    meta_step: chex.Array | None = None,
    **settings,
) -> tuple[chex.Array, dict]:
    """Adapts on the support set, then returns the query loss and metrics of one task.

    ``episode`` is one `Episode` (support leaves ``[ways * shots, ...]``, query leaves
    ``[ways * queries, ...]``, no task axis); the loss and metrics are scalars.
    ``settings`` are :func:`adapt`'s keywords (``loss_fn``, ``inner_lr``, ``num_steps``,
    ``first_order``, ``remat``, ``unroll``, ``signed_rates``, ``meta_gradient``).

    Metrics: the query metrics of ``loss_fn`` after adaptation, plus ``support_loss`` (the
    support loss before adaptation) when ``num_steps > 0``. With ``num_steps=0`` nothing
    is adapted: the loss and metrics are those of ``params`` on the query set, and there is
    no ``support_loss`` (no inner step computed one).

    With ``meta_gradient.first_order_until > 0`` the scalar ``meta_step`` (traced) picks
    first order or ``meta_gradient.mode`` by one ``lax.cond``.
    """
    for field in ("support_labels", "query_labels"):
        labels = getattr(episode, field)
        if jnp.issubdtype(jnp.result_type(labels), jnp.integer) and jnp.ndim(labels) != 1:
            raise ValueError(
                f"episode.{field} has shape {jnp.shape(labels)}; expected [examples]: "
                "task_loss takes one Episode without a task axis (meta_loss takes a batch)"
            )
    meta_gradient = settings.pop("meta_gradient", "exact")
    if not _is_exact_by_name(meta_gradient):
        spec = meta_gradients.meta_gradient_spec(
            meta_gradient, first_order=settings.pop("first_order", False)
        )
        if spec.annealed:
            loss_of = lambda mode_spec, p: task_loss(
                p, episode, meta_gradient=mode_spec, **settings
            )
            return meta_gradients.anneal_order(spec, meta_step, loss_of, params)
        settings["meta_gradient"] = spec
    adapt_fn = functools.partial(adapt, **settings)
    scored = common.adapt_and_score(adapt_fn, settings["loss_fn"], params, episode)
    return scored.loss, scored.metrics


def meta_loss(
    params: Params, episodes: Episode, *, task_batching: str | int = "auto", **settings
) -> tuple[chex.Array, dict]:
    """Mean query loss over a task batch (leading axis of every ``episodes`` leaf).

    ``episodes`` leaves are ``[tasks, ways * shots, ...]`` (support) and
    ``[tasks, ways * queries, ...]`` (query); returns the scalar mean loss and the metrics
    of :func:`task_loss` (whose keywords ``settings`` are) averaged over tasks.
    ``task_batching``: see :func:`mmjax.meta.task_batching.resolve_task_batching`.
    """
    per_task = functools.partial(task_loss, **settings)
    return batching.mean_over_tasks(per_task, params, episodes, task_batching)


def meta_grad(
    params: Params, episodes: Episode, *, task_batching: str | int = "auto", **settings
) -> tuple[Params, dict]:
    """Gradient of :func:`meta_loss` w.r.t. the meta-parameters, and the batch metrics.

    ``settings`` are :func:`task_loss`'s keywords (``loss_fn``, ``inner_lr``,
    ``num_steps``, ``meta_gradient``, ``meta_step``, ...).
    """
    per_task = functools.partial(task_loss, **settings)
    return batching.grad_over_tasks(per_task, params, episodes, task_batching)


def _is_exact_by_name(meta_gradient: str | meta_gradients.MetaGradient) -> bool:
    """``"exact"`` by name: the ``first_order`` flag alone decides (the original path)."""
    return isinstance(meta_gradient, str) and meta_gradient == "exact"


def maml_learner(
    model: nn.Module,
    *,
    remat: bool = False,
    unroll: int | bool = 1,
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
    truncate: int | None = None,
    lam: float = 1.0,
    cg_steps: int = 20,
    cg_tol: float = 1e-6,
    first_order_until: int = 0,
    eval_batch_norm: str = "transductive",
    **settings: Unpack[common.InnerLoopSettings],
) -> MetaLearner:
    """MAML (``first_order=False``) or FOMAML on ``model`` (a Flax classifier).

    Args:
      model: ``apply(params, inputs) -> [batch, ways]`` logits.
      remat, unroll: of the inner loop (see :func:`adapt`).
      meta_gradient: ``"exact"``, ``"first_order"``, ``"truncated"`` (``truncate``) or
        ``"implicit"`` (``lam``, ``cg_steps``, ``cg_tol``; also the inner problem at
        evaluation); see :mod:`mmjax.meta.meta_gradients`.
      first_order_until: first-order meta-steps before this one (MAML++ annealing); the
        learner's ``meta_grad`` then takes ``meta_step=``.
      eval_batch_norm: query batching at evaluation (:mod:`mmjax.meta.batch_norm_eval`).
      **settings: the inner loop (:class:`~mmjax.meta.common.InnerLoopSettings`:
        ``inner_lr``, ``num_inner_steps``, ``eval_num_inner_steps``, ``first_order`` for
        FOMAML, ``task_batching``).
    """
    inner = common.check_learner_settings(settings)
    loss_fn = classification_loss(model.apply)
    spec = meta_gradients.meta_gradient_spec(
        meta_gradient, first_order=inner.first_order, truncate=truncate, lam=lam,
        cg_steps=cg_steps, cg_tol=cg_tol, first_order_until=first_order_until,
    )  # fmt: skip
    meta_gradients.check_num_steps(spec, inner.num_inner_steps)
    batch_norm_eval.check_eval_batch_norm(eval_batch_norm)
    legacy = meta_gradient == "exact" and not spec.annealed
    loop = {"loss_fn": loss_fn, "inner_lr": inner.inner_lr, "unroll": unroll}
    train_gradient = {"first_order": inner.first_order} if legacy else {"meta_gradient": spec}
    learner_grad = functools.partial(
        meta_grad, num_steps=inner.num_inner_steps, task_batching=inner.task_batching,
        remat=remat, **loop, **train_gradient,
    )  # fmt: skip
    # Evaluation adapts with the training inner problem (proximal for "implicit").
    eval_spec = "exact" if spec.mode != "implicit" else spec._replace(first_order_until=0)
    per_task = functools.partial(
        evaluation_task_loss, apply_fn=model.apply, eval_batch_norm=eval_batch_norm,
        num_steps=inner.eval_num_inner_steps, meta_gradient=eval_spec, **loop,
    )  # fmt: skip
    names = {"first_order": "fomaml", "implicit": "imaml"}
    return MetaLearner(
        name=names.get(spec.mode, "maml"),
        init=model.init,
        meta_grad=learner_grad,
        evaluate=functools.partial(
            batching.metrics_per_task, per_task, task_batching=inner.task_batching
        ),
        takes_meta_step=spec.annealed,
        eval_batch_norm=eval_batch_norm,
    )


def evaluation_task_loss(
    params: Params, episode: Episode, *, apply_fn, eval_batch_norm: str, **settings
) -> tuple[chex.Array, dict]:
    """:func:`task_loss` with the queries batched through batch norm by ``eval_batch_norm``.

    ``apply_fn(params, inputs) -> logits`` is the classifier that ``settings["loss_fn"]``
    wraps; ``settings`` are :func:`adapt`'s keywords.
    """
    if eval_batch_norm == "transductive":
        return task_loss(params, episode, **settings)

    def score(adapted: Params, query_inputs: chex.ArrayTree, query_labels: chex.Array):
        return batch_norm_eval.query_metrics(
            apply_fn, adapted, episode.support_inputs, query_inputs, query_labels,
            mode=eval_batch_norm,
        )  # fmt: skip

    scored = common.adapt_and_score(functools.partial(adapt, **settings), score, params, episode)
    return scored.loss, scored.metrics


register("maml", maml_learner)
