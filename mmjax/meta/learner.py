"""One interface for every meta-learning algorithm, so they share trainer and evaluation.

A :class:`MetaLearner` is a bundle of pure functions over a meta-parameter pytree:

- ``init(key, example_inputs) -> meta_params``
- ``meta_grad(meta_params, episodes) -> (grads, metrics)``: the (pseudo-)gradient that the
  optax meta-optimizer consumes for a task batch (leading axis on every episode leaf). For
  MAML it is the gradient of the mean query loss; for Reptile it is
  ``meta_params - adapted_params`` averaged over tasks.
- ``evaluate(meta_params, episodes) -> metrics``: per-task metrics (leading task axis), at
  least ``accuracy`` and ``loss``, after whatever test-time adaptation the algorithm does.

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
from mmjax.meta import maml

Params = Any


@dataclasses.dataclass(frozen=True)
class MetaLearner:
    """Pure functions of one algorithm (see the module docstring)."""

    name: str
    init: Callable[[chex.PRNGKey, chex.ArrayTree], Params]
    meta_grad: Callable[[Params, Episode], tuple[Params, dict]]
    evaluate: Callable[[Params, Episode], dict]


def maml_learner(
    model: nn.Module,
    *,
    inner_lr: float,
    num_inner_steps: int,
    eval_num_inner_steps: int | None = None,
    first_order: bool = False,
    remat: bool = False,
    task_batching: str | int = "auto",
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
    """
    loss_fn = maml.classification_loss(model.apply)
    maml._check_settings(inner_lr=inner_lr, num_steps=num_inner_steps)
    eval_steps = num_inner_steps if eval_num_inner_steps is None else eval_num_inner_steps
    maml._check_settings(inner_lr=inner_lr, num_steps=eval_steps)
    maml.resolve_task_batching(task_batching)
    meta_grad = functools.partial(
        maml.meta_grad,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        num_steps=num_inner_steps,
        first_order=first_order,
        remat=remat,
        task_batching=task_batching,
    )
    per_task = functools.partial(
        maml.task_loss, loss_fn=loss_fn, inner_lr=inner_lr, num_steps=eval_steps
    )

    evaluate = functools.partial(maml.metrics_per_task, per_task, task_batching=task_batching)

    return MetaLearner(
        name="fomaml" if first_order else "maml",
        init=model.init,
        meta_grad=meta_grad,
        evaluate=evaluate,
    )


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
