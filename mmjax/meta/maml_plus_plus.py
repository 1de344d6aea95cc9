"""MAML++ pieces (Antoniou et al. 2019), usable separately: LSLR, the multi-step loss and
per-step batch-norm weights and biases.

- **LSLR** (learned per-layer per-step inner learning rates): the inner rate of parameter
  tensor ``l`` at inner step ``j`` is a meta-parameter ``α[l][j]``; meta-parameters are
  ``{"model": θ, "inner_lr": α}`` with ``α`` shaped like ``θ`` but every leaf ``[num_steps]``
  (:func:`init_lslr`).
- **Multi-step loss**: the task loss is ``Σ_j w_j L_query(φ_j)``, the query loss after every
  inner step, with weights annealed from uniform towards the last step
  (:func:`multi_step_weights`, the schedule of the MAML++ code).
- **Per-step batch-norm weights and biases** (MAML++'s "BNWB"): the meta-parameters gain
  ``"per_step_bn": β``, a copy of every batch-norm ``scale``/``bias`` leaf of ``θ`` (those of
  the ``BatchStatNorm`` modules, the fused first Conv-4 block's included) with a leading axis
  ``[num_steps + 1]`` (:func:`init_per_step_bn`). The parameters ``φ_k`` after ``k`` inner
  steps are always run with copy ``k``: copy ``j`` in the support forward pass of inner step
  ``j`` (``j < num_steps``), copy ``j + 1`` in the query loss after step ``j`` (multi-step
  loss), copy ``num_steps`` in the final query loss and at evaluation. (The MAML++ code keeps
  ``num_steps`` copies and scores the query after step ``j`` with copy ``j``; here the final
  query has a copy of its own.) The copies are meta-learned and not adapted in the inner loop
  (MAML++'s setting with the BN parameters not inner-loop optimisable); ``θ``'s own batch-norm
  leaves are then unused (zero meta-gradient). The path helpers are in
  :mod:`mmjax.meta.per_step_bn`. mmjax's batch norm always uses the batch's
  statistics, so there are no running statistics to keep per step (MAML++'s "BNRS").
- **Derivative-order annealing** is ``first_order_until`` of
  :class:`mmjax.meta.meta_gradients.MetaGradient`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.data.episodes import Episode
from mmjax.meta import batch_norm_eval, common, meta_gradients
from mmjax.meta import task_batching as batching
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner, register

# The per-step batch-norm helpers live in mmjax.meta.per_step_bn; re-exported here, where
# they were first defined.
from mmjax.meta.per_step_bn import (  # noqa: F401
    BATCH_NORM_MODULES,
    batch_norm_leaves,
    check_per_step_bn,
    copy_at,
    init_per_step_bn,
    with_batch_norm,
)


def init_lslr(params: Params, *, num_steps: int, inner_lr: float) -> Params:
    """Per-layer per-step rates: every leaf of ``params`` becomes ``[num_steps]`` of ``inner_lr``."""
    common.check_settings(inner_lr=inner_lr, num_steps=num_steps)
    return jax.tree.map(lambda p: jnp.full((num_steps,), inner_lr, jnp.result_type(p)), params)


def multi_step_weights(
    meta_step: chex.Array | int, *, num_steps: int, anneal_steps: int
) -> chex.Array:
    """MAML++'s per-step loss weights ``[num_steps]`` at ``meta_step`` (traced or not).

    Uniform ``1/num_steps`` at meta-step 0; the non-final weights fall linearly by
    ``1/(num_steps * anneal_steps)`` per meta-step to ``0.03/num_steps``, the final weight
    rising so the weights sum to 1. ``anneal_steps=0``: the last step only (plain MAML).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1 for a multi-step loss; got {num_steps}")
    if anneal_steps < 0:
        raise ValueError(f"anneal_steps must be >= 0; got {anneal_steps}")
    last = jnp.arange(num_steps) == num_steps - 1
    if anneal_steps == 0:
        return last.astype(jnp.float32)
    decay = 1.0 / num_steps / anneal_steps
    floor = 0.03 / num_steps
    step = jnp.asarray(meta_step, jnp.float32)
    early = jnp.maximum(1.0 / num_steps - step * decay, floor)
    final = 1.0 - (num_steps - 1) * early
    return jnp.where(last, final, early)


def adapt_per_step(
    params: Params,
    episode: Episode,
    *,
    loss_fn: common.LossFn,
    inner_lr: float | Params,
    num_steps: int,
    lslr: bool,
    first_order_steps: int = 0,
    query_losses: bool = False,
    per_step_bn: Params | None = None,
) -> tuple[Params, chex.Array, chex.Array]:
    """Inner SGD on the support set; optionally the query loss after every step.

    Args:
      params: initial parameters.
      episode: one task (support ``[ways * shots, ...]``, query ``[ways * queries, ...]``).
      loss_fn: ``(params, inputs, labels) -> (loss, metrics)``.
      inner_lr: a scalar (or Meta-SGD pytree), or with ``lslr`` the LSLR rates, every leaf
        ``[num_steps]``.
      num_steps: inner steps.
      lslr: ``inner_lr`` holds one rate per step.
      first_order_steps: the first this many steps stop the gradient through the inner
        gradients (truncated back-propagation; ``num_steps``: first order).
      query_losses: also compute the query loss after every step.
      per_step_bn: per-step batch-norm copies (:func:`init_per_step_bn`, leaves
        ``[num_steps + 1, ...]``): step ``j``'s support pass runs with copy ``j``, the query
        loss after it with copy ``j + 1``; the copies are not adapted.

    Returns:
      ``(adapted, support_losses, query_losses)``, the losses ``[num_steps]`` (support
      before each step, query after each; zeros when ``query_losses`` is false). With
      ``per_step_bn`` the batch-norm leaves of ``adapted`` are copy ``num_steps`` (those
      the query is scored with).
    """
    common.check_settings(inner_lr=0.1 if lslr else inner_lr, num_steps=num_steps)
    if lslr:
        _check_lslr(inner_lr, params, num_steps)
    if per_step_bn is not None:
        check_per_step_bn(per_step_bn, params, num_steps)
    support = (episode.support_inputs, episode.support_labels)

    def run(current, copy):  # the parameters a forward pass uses
        return current if copy is None else with_batch_norm(current, copy)

    def step(first_order, current, xs):
        lr = xs["inner_lr"] if lslr else inner_lr
        support_loss = lambda p: loss_fn(run(p, xs["bn"]), *support)
        (loss, _), grads = jax.value_and_grad(support_loss, has_aux=True)(current)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        current = common.sgd_update(current, grads, lr)
        query = (
            loss_fn(run(current, xs["bn_next"]), episode.query_inputs, episode.query_labels)[0]
            if query_losses
            else jnp.zeros_like(loss)
        )
        return current, (loss, query)

    losses = []
    head = first_order_steps
    for first_order, steps in ((True, range(head)), (False, range(head, num_steps))):
        if not steps:
            continue
        xs = {
            "inner_lr": jax.tree.map(lambda r, s=steps: r[s.start : s.stop], inner_lr)
            if lslr
            else None,
            "bn": copy_at(per_step_bn, slice(steps.start, steps.stop)),
            "bn_next": copy_at(per_step_bn, slice(steps.start + 1, steps.stop + 1)),
        }
        body = functools.partial(step, first_order)
        params, out = jax.lax.scan(body, params, xs, length=len(steps))
        losses.append(out)
    params = run(params, copy_at(per_step_bn, num_steps))
    if not losses:
        zero = jnp.zeros((0,))
        return params, zero, zero
    support_losses = jnp.concatenate([s for s, _ in losses])
    return params, support_losses, jnp.concatenate([q for _, q in losses])


def multi_step_task_loss(
    meta_params: Params,
    episode: Episode,
    *,
    loss_fn: common.LossFn,
    inner_lr: float = 0.4,
    num_steps: int,
    lslr: bool = True,
    per_step_bn: bool = False,
    step_weights: chex.Array | None = None,
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
    meta_step: chex.Array | None = None,
) -> tuple[chex.Array, dict]:
    """MAML++ loss of one task: ``Σ_j w_j L_query(φ_j)``, or ``L_query(φ_N)`` without weights.

    Args:
      meta_params: ``θ`` with the scalar ``inner_lr``, or (with ``lslr`` or ``per_step_bn``)
        ``{"model": θ, "inner_lr": α, "per_step_bn": β}`` holding ``"inner_lr"`` (``α``
        leaves ``[num_steps]``) exactly with ``lslr`` and ``"per_step_bn"``
        (:func:`init_per_step_bn`, leaves ``[num_steps + 1, ...]``) exactly with ``per_step_bn``.
      episode: one task, no task axis.
      per_step_bn: run the parameters after ``k`` inner steps with batch-norm copy ``k``.
      step_weights: ``[num_steps]`` multi-step weights (e.g. :func:`multi_step_weights`);
        ``None``: the query loss after the last step only.
      meta_gradient: ``"exact"``, ``"first_order"`` or ``"truncated"`` (``"implicit"`` has
        no intermediate steps); ``first_order_until`` needs ``meta_step``.

    Returns:
      Scalar loss and metrics (``loss``, ``accuracy`` of the adapted model on the query
      set, ``support_loss`` before adaptation, ``final_query_loss``).
    """
    spec = meta_gradients.meta_gradient_spec(meta_gradient)
    if spec.mode == "implicit":
        raise ValueError("meta_gradient='implicit' is not defined for MAML++'s inner loop")
    meta_gradients.check_num_steps(spec, num_steps)
    if spec.annealed:
        settings = {"loss_fn": loss_fn, "inner_lr": inner_lr, "num_steps": num_steps}
        settings.update(lslr=lslr, per_step_bn=per_step_bn, step_weights=step_weights)
        loss_of = lambda mode_spec, p: multi_step_task_loss(
            p, episode, meta_gradient=mode_spec, **settings
        )
        return meta_gradients.anneal_order(spec, meta_step, loss_of, meta_params)
    exact_steps = {"exact": num_steps, "first_order": 0}.get(spec.mode, spec.truncate)
    params, rates, copies = split_meta_params(
        meta_params, lslr=lslr, per_step_bn=per_step_bn, inner_lr=inner_lr
    )
    adapted, support_losses, query_losses = adapt_per_step(
        params,
        episode,
        loss_fn=loss_fn,
        inner_lr=rates,
        num_steps=num_steps,
        lslr=lslr,
        first_order_steps=num_steps - exact_steps,
        query_losses=step_weights is not None,
        per_step_bn=copies,
    )
    final, metrics = loss_fn(adapted, episode.query_inputs, episode.query_labels)
    metrics = dict(metrics, final_query_loss=final)
    if num_steps > 0:
        metrics["support_loss"] = support_losses[0]
    if step_weights is None:
        return final, metrics
    chex.assert_shape(step_weights, (num_steps,))
    return jnp.sum(step_weights * query_losses), metrics


def split_meta_params(
    meta_params: Params, *, lslr: bool, per_step_bn: bool, inner_lr: float
) -> tuple[Params, float | Params, Params | None]:
    """``(θ, inner rates, per-step batch-norm copies or None)`` of MAML++'s meta-parameters.

    ``meta_params`` is ``θ`` when neither ``lslr`` nor ``per_step_bn`` (the rate is then the
    scalar ``inner_lr``), else ``{"model": θ[, "inner_lr": α][, "per_step_bn": β]}``.
    """
    if not (lslr or per_step_bn):
        return meta_params, inner_lr, None
    keys = ["model"] + ["inner_lr"] * lslr + ["per_step_bn"] * per_step_bn
    if not isinstance(meta_params, Mapping) or sorted(meta_params) != sorted(keys):
        found = sorted(meta_params) if isinstance(meta_params, Mapping) else type(meta_params)
        raise ValueError(
            f"meta_params must be a dict with keys {keys} (lslr={lslr}, "
            f"per_step_bn={per_step_bn}; see the learner's init); got {found}"
        )
    rates = meta_params["inner_lr"] if lslr else inner_lr
    return meta_params["model"], rates, meta_params["per_step_bn"] if per_step_bn else None


def _check_lslr(inner_lr: Params, params: Params, num_steps: int) -> None:
    lr_leaves = jax.tree_util.tree_leaves_with_path(inner_lr)
    if jax.tree.structure(inner_lr) != jax.tree.structure(params):
        raise ValueError("LSLR inner_lr must have the structure of params (see init_lslr)")
    for path, leaf in lr_leaves:
        if jnp.shape(leaf) != (num_steps,):
            raise ValueError(
                f"LSLR inner_lr leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; "
                f"expected ({num_steps},): one rate per inner step"
            )


def mamlpp_learner(
    model: nn.Module,
    *,
    inner_lr: float = 0.4,
    num_inner_steps: int = 5,
    lslr: bool = True,
    per_step_bn: bool = False,
    multi_step_loss: bool = True,
    multi_step_anneal_steps: int = 10_000,
    meta_gradient: str = "exact",
    truncate: int | None = None,
    first_order_until: int = 0,
    task_batching: str | int = "auto",
    eval_batch_norm: str = "transductive",
) -> MetaLearner:
    """MAML++ on ``model`` (a Flax classifier), each piece switchable.

    Args:
      model: ``apply(params, inputs) -> [batch, ways]`` logits.
      inner_lr: initial (LSLR) or fixed inner rate.
      num_inner_steps: inner steps, at training and evaluation.
      lslr: learn per-layer per-step rates (:func:`init_lslr`).
      per_step_bn: meta-learn a copy of the batch-norm parameters per inner step, used at
        training and evaluation, not adapted (:func:`init_per_step_bn`; the model must have
        batch norm, else ``init`` raises).
      multi_step_loss: weighted query losses of every step, annealed over
        ``multi_step_anneal_steps`` meta-steps (:func:`multi_step_weights`).
      meta_gradient, truncate, first_order_until: see
        :mod:`mmjax.meta.meta_gradients` (``first_order_until``: derivative-order annealing).
      task_batching: :func:`mmjax.meta.task_batching.resolve_task_batching`.
      eval_batch_norm: query batching at evaluation (:mod:`mmjax.meta.batch_norm_eval`).

    The learner's ``meta_grad`` takes ``meta_step=`` (the loop passes it) when the loss
    weights or the derivative order are annealed; without it the weights are those of
    meta-step 0.
    """
    common.check_settings(inner_lr=inner_lr, num_steps=num_inner_steps)
    spec = meta_gradients.meta_gradient_spec(
        meta_gradient, truncate=truncate, first_order_until=first_order_until
    )
    if spec.mode == "implicit":
        raise ValueError("meta_gradient='implicit' is not defined for MAML++'s inner loop")
    meta_gradients.check_num_steps(spec, num_inner_steps)
    batch_norm_eval.check_eval_batch_norm(eval_batch_norm)
    if multi_step_loss and num_inner_steps < 1:
        raise ValueError("multi_step_loss needs num_inner_steps >= 1")
    loss_fn = common.classification_loss(model.apply)
    settings = {"loss_fn": loss_fn, "inner_lr": inner_lr, "num_steps": num_inner_steps}
    settings.update(lslr=lslr, per_step_bn=per_step_bn)
    if not isinstance(per_step_bn, bool):
        raise ValueError(f"per_step_bn must be a bool; got {per_step_bn!r}")

    def init(key: chex.PRNGKey, example_inputs: chex.ArrayTree) -> Params:
        params = model.init(key, example_inputs)
        if not (lslr or per_step_bn):
            return params
        meta_params = {"model": params}
        if lslr:
            meta_params["inner_lr"] = init_lslr(params, num_steps=num_inner_steps,
                                                inner_lr=inner_lr)  # fmt: skip
        if per_step_bn:
            meta_params["per_step_bn"] = init_per_step_bn(params, num_steps=num_inner_steps)
        return meta_params

    def meta_grad(meta_params: Params, episodes: Episode, meta_step: chex.Array | None = None):
        weights = None
        if multi_step_loss:
            step = 0 if meta_step is None else meta_step
            weights = multi_step_weights(
                step, num_steps=num_inner_steps, anneal_steps=multi_step_anneal_steps
            )
        per_task = functools.partial(
            multi_step_task_loss,
            step_weights=weights,
            meta_gradient=spec,
            meta_step=meta_step,
            **settings,
        )
        return batching.grad_over_tasks(per_task, meta_params, episodes, task_batching)

    def eval_task(meta_params: Params, episode: Episode):
        params, rates, copies = split_meta_params(
            meta_params, lslr=lslr, per_step_bn=per_step_bn, inner_lr=inner_lr
        )

        def adapt(params, support_inputs, support_labels):
            support = episode._replace(support_inputs=support_inputs, support_labels=support_labels)
            adapted, support_losses, _ = adapt_per_step(
                params, support, loss_fn=loss_fn, inner_lr=rates, num_steps=num_inner_steps,
                lslr=lslr, per_step_bn=copies,
            )  # fmt: skip
            return adapted, support_losses

        def score(adapted, query_inputs, query_labels):
            return batch_norm_eval.query_metrics(
                model.apply, adapted, episode.support_inputs, query_inputs, query_labels,
                mode=eval_batch_norm,
            )  # fmt: skip

        scored = common.adapt_and_score(adapt, score, params, episode)
        return scored.loss, scored.metrics

    evaluate = functools.partial(batching.metrics_per_task, eval_task, task_batching=task_batching)
    return MetaLearner(
        name="mamlpp",
        init=init,
        meta_grad=meta_grad,
        evaluate=evaluate,
        takes_meta_step=multi_step_loss or spec.annealed,
        eval_batch_norm=eval_batch_norm,
    )


register("mamlpp", mamlpp_learner)
