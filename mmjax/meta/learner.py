"""One interface for every meta-learning algorithm, so they share trainer and evaluation.

A :class:`MetaLearner` is a bundle of pure functions over a meta-parameter pytree:

- ``init(key, example_inputs) -> meta_params``
- ``meta_grad(meta_params, episodes) -> (grads, metrics)``: the (pseudo-)gradient that the
  optax meta-optimizer consumes for a task batch (leading axis on every episode leaf). For
  MAML it is the gradient of the mean query loss; for Reptile it is
  ``meta_params - adapted_params`` averaged over tasks.
- ``evaluate(meta_params, episodes) -> metrics``: per-task metrics (leading task axis), at
  least ``accuracy`` and ``loss``, after whatever test-time adaptation the algorithm does.

``takes_meta_step``: ``meta_grad`` also takes ``meta_step=`` (the traced meta-step index,
for schedules such as derivative-order annealing). ``eval_batch_norm``: how ``evaluate``
batches the queries through batch norm (:mod:`mmjax.meta.batch_norm_eval`).

Learners are hashable (they hold only functions and static settings), so they can be static
arguments of ``jit``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Callable

import chex
import flax.linen as nn

from mmjax.data.episodes import Episode
from mmjax.meta import batch_norm_eval, maml, meta_gradients

Params = Any


@dataclasses.dataclass(frozen=True)
class MetaLearner:
    """Pure functions of one algorithm (see the module docstring)."""

    name: str
    init: Callable[[chex.PRNGKey, chex.ArrayTree], Params]
    meta_grad: Callable[[Params, Episode], tuple[Params, dict]]
    evaluate: Callable[[Params, Episode], dict]
    takes_meta_step: bool = False
    eval_batch_norm: str = "transductive"


def maml_learner(
    model: nn.Module,
    *,
    inner_lr: float,
    num_inner_steps: int,
    eval_num_inner_steps: int | None = None,
    first_order: bool = False,
    remat: bool = False,
    task_batching: str | int = "auto",
    meta_gradient: str = "exact",
    truncate: int | None = None,
    lam: float = 1.0,
    cg_steps: int = 20,
    cg_tol: float = 1e-6,
    first_order_until: int = 0,
    eval_batch_norm: str = "transductive",
) -> MetaLearner:
    """MAML (``first_order=False``) or FOMAML on ``model`` (a Flax classifier).

    Args:
      model: ``apply(params, inputs) -> [batch, ways]`` logits.
      inner_lr: inner SGD step size.
      num_inner_steps: inner steps during meta-training.
      eval_num_inner_steps: inner steps at evaluation (default: ``num_inner_steps``).
      first_order: FOMAML.
      remat: rematerialise inner steps (see :func:`mmjax.meta.maml.adapt`).
      task_batching: how the task batch is mapped
        (:func:`mmjax.meta.maml.resolve_task_batching`).
      meta_gradient: ``"exact"``, ``"first_order"``, ``"truncated"`` (``truncate``) or
        ``"implicit"`` (``lam``, ``cg_steps``, ``cg_tol``; also the inner problem at
        evaluation); see :mod:`mmjax.meta.meta_gradients`.
      first_order_until: first-order meta-steps before this one (MAML++ annealing); the
        learner's ``meta_grad`` then takes ``meta_step=``.
      eval_batch_norm: query batching at evaluation (:mod:`mmjax.meta.batch_norm_eval`).
    """
    loss_fn = maml.classification_loss(model.apply)
    spec = meta_gradients.meta_gradient_spec(
        meta_gradient,
        first_order=first_order,
        truncate=truncate,
        lam=lam,
        cg_steps=cg_steps,
        cg_tol=cg_tol,
        first_order_until=first_order_until,
    )
    meta_gradients.check_num_steps(spec, num_inner_steps)
    batch_norm_eval.check_eval_batch_norm(eval_batch_norm)
    maml._check_settings(inner_lr=inner_lr, num_steps=num_inner_steps)
    eval_steps = num_inner_steps if eval_num_inner_steps is None else eval_num_inner_steps
    maml._check_settings(inner_lr=inner_lr, num_steps=eval_steps)
    maml.resolve_task_batching(task_batching)
    legacy = meta_gradient == "exact" and not spec.annealed
    meta_grad = functools.partial(
        maml.meta_grad,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        num_steps=num_inner_steps,
        first_order=first_order if legacy else False,
        remat=remat,
        task_batching=task_batching,
        **({} if legacy else {"meta_gradient": spec}),
    )
    # Evaluation adapts with the training inner problem (proximal for "implicit").
    eval_spec = "exact" if spec.mode != "implicit" else spec._replace(first_order_until=0)
    per_task = functools.partial(
        _eval_task_loss,
        model.apply,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        num_steps=eval_steps,
        meta_gradient=eval_spec,
        eval_batch_norm=eval_batch_norm,
    )

    evaluate = functools.partial(maml.metrics_per_task, per_task, task_batching=task_batching)
    names = {"first_order": "fomaml", "implicit": "imaml"}
    return MetaLearner(
        name=names.get(spec.mode, "maml"),
        init=model.init,
        meta_grad=meta_grad,
        evaluate=evaluate,
        takes_meta_step=spec.annealed,
        eval_batch_norm=eval_batch_norm,
    )


def _eval_task_loss(apply_fn, params, episode, *, eval_batch_norm, **settings):
    """:func:`maml.task_loss`, with the queries batched through batch norm as asked."""
    if eval_batch_norm == "transductive":
        return maml.task_loss(params, episode, **settings)
    adapted, inner_losses = maml.adapt(
        params, episode.support_inputs, episode.support_labels, **settings
    )
    loss, metrics = batch_norm_eval.query_metrics(
        apply_fn,
        adapted,
        episode.support_inputs,
        episode.query_inputs,
        episode.query_labels,
        mode=eval_batch_norm,
    )
    if settings["num_steps"] > 0:
        metrics["support_loss"] = inner_losses[0]
    return loss, metrics


_REGISTRY: dict[str, Callable[..., MetaLearner]] = {}


def register(name: str, builder: Callable[..., MetaLearner]) -> None:
    """Registers ``builder(model, **settings) -> MetaLearner`` under ``name``."""
    _REGISTRY[name] = builder


def available_learners() -> list[str]:
    """Names accepted by :func:`make_learner` (and ``config.algorithm``)."""
    return sorted(_REGISTRY)


def make_learner(name: str, model: nn.Module, **settings) -> MetaLearner:
    """Builds the registered learner ``name``; an unknown name lists the valid ones."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown algorithm {name!r}{hint}; valid: {', '.join(available_learners())}"
        )
    return _REGISTRY[name](model, **settings)


register("maml", maml_learner)
