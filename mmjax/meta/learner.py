"""One interface for every meta-learning algorithm, so they share trainer and evaluation.

A :class:`MetaLearner` is a bundle of pure functions over a meta-parameter pytree:

- ``init(key, example_inputs) -> meta_params``
- ``meta_grad(meta_params, episodes) -> (grads, metrics)``: the (pseudo-)gradient that the
  optax meta-optimizer consumes for a task batch (leading axis on every episode leaf). For
  MAML it is the gradient of the mean query loss; for Reptile it is
  ``meta_params - adapted_params`` averaged over tasks.
- ``evaluate(meta_params, episodes) -> metrics``: per-task metrics (leading task axis), at
  least ``accuracy`` and ``loss`` (``loss`` and ``mse`` for regression), after whatever
  test-time adaptation the algorithm does.

``takes_meta_step``: ``meta_grad`` also takes ``meta_step=`` (the traced meta-step index,
for schedules such as derivative-order annealing). ``eval_batch_norm``: how ``evaluate``
batches the queries through batch norm (:mod:`mmjax.meta.batch_norm_eval`).

Learners are hashable (they hold only functions and static settings), so they can be static
arguments of ``jit``. Each algorithm builds its learner in its own module of
:mod:`mmjax.meta` and registers it by name; :func:`make_learner` builds one by name and
:func:`mmjax.meta.step.make_step` turns any of them into a meta-training step.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

import chex
import flax.linen as nn

from mmjax.data.episodes import Episode

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
