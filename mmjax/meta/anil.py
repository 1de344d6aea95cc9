"""ANIL (Raghu et al. 2020): MAML whose inner loop adapts only the classifier head.

The model is a :class:`mmjax.nn.classifier.Classifier` (parameters
``{"params": {"encoder": ..., "head": ...}}``). Per task the encoder embeds the support and
query sets once; the inner loop runs SGD on the head alone (by ``lax.scan`` through
:func:`mmjax.meta.maml.adapt`), so the encoder is frozen inside the inner loop. The outer
gradient still reaches the encoder through the embeddings, so it is meta-learned.
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
from typing_extensions import Unpack

from mmjax.data.episodes import Episode
from mmjax.meta import common, maml
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner, register


def _check_classifier_params(params: Params) -> None:
    inner = params.get("params", {}) if isinstance(params, dict) else {}
    if not {"encoder", "head"} <= set(inner):
        raise ValueError(
            "expected Classifier parameters {'params': {'encoder': ..., 'head': ...}}; got keys "
            f"{sorted(inner) if inner else type(params).__name__}"
        )


def encode(model: nn.Module, params: Params, inputs: chex.ArrayTree) -> chex.Array:
    """Encoder features of a ``Classifier``: ``inputs -> [batch, features]``."""
    return model.encoder.apply({"params": params["params"]["encoder"]}, inputs)


def head_logits(model: nn.Module, head: Params, features: chex.Array) -> chex.Array:
    """The ``Classifier``'s linear head on ``features: [batch, d]`` -> ``[batch, num_classes]``."""
    return nn.Dense(model.num_classes).apply({"params": head}, features)


def with_head(params: Params, head: Params) -> Params:
    """``params`` with its head replaced by ``head`` (a new pytree; inputs are not modified)."""
    return {**params, "params": {**params["params"], "head": head}}


def adapt_head(
    model: nn.Module,
    params: Params,
    inputs: chex.ArrayTree,
    labels: chex.Array,
    *,
    inner_lr: float,
    num_steps: int,
    first_order: bool = False,
) -> tuple[Params, chex.Array]:
    """ANIL's inner loop: SGD on the head only, on fixed encoder features of ``inputs``.

    Args:
      model: the ``Classifier``.
      params: its parameters ``{"params": {"encoder", "head"}}``.
      inputs: support inputs, leaves ``[support_size, ...]``.
      labels: ``[support_size]``.

    Returns:
      ``(adapted_params, losses)``: the encoder leaves are the input leaves unchanged;
      ``losses: [num_steps]`` support losses before each step.
    """
    _check_classifier_params(params)
    head, losses = _head_inner_loop(model, inner_lr=inner_lr, num_steps=num_steps,
                                    first_order=first_order)(
        params["params"]["head"], encode(model, params, inputs), labels
    )  # fmt: skip
    return with_head(params, head), losses


def _head_loss(model: nn.Module) -> common.LossFn:
    return common.classification_loss(lambda head, x: head_logits(model, head, x))


def _head_inner_loop(model: nn.Module, **settings) -> common.AdaptFn:
    """``(head, features, labels) -> (adapted_head, losses)``: MAML's inner loop on the head."""
    return functools.partial(maml.adapt, loss_fn=_head_loss(model), **settings)


def head_only_task_loss(
    params: Params,
    episode: Episode,
    *,
    model: nn.Module,
    inner_lr: float,
    num_steps: int,
    first_order: bool = False,
) -> tuple[chex.Array, dict]:
    """Head-only adaptation on the support set, then the query loss and metrics of one task.

    ``episode``: one task (no task axis); returns a scalar loss and metrics (``loss``,
    ``accuracy`` and, with ``num_steps > 0``, ``support_loss``).
    """
    _check_classifier_params(params)
    features = episode._replace(
        support_inputs=encode(model, params, episode.support_inputs),
        query_inputs=encode(model, params, episode.query_inputs),
    )
    adapt = _head_inner_loop(model, inner_lr=inner_lr, num_steps=num_steps, first_order=first_order)
    scored = common.adapt_and_score(adapt, _head_loss(model), params["params"]["head"], features)
    return scored.loss, scored.metrics


def anil_learner(model: nn.Module, **settings: Unpack[common.InnerLoopSettings]) -> MetaLearner:
    """ANIL on a ``Classifier`` ``model`` (head adapted in the inner loop, encoder frozen there).

    ``model``: ``Classifier(encoder, num_classes)``; ``settings``: the inner loop on the
    head (:class:`~mmjax.meta.common.InnerLoopSettings`).
    """
    inner = common.check_learner_settings(settings)
    if not hasattr(model, "encoder") or not hasattr(model, "num_classes"):
        raise ValueError(
            f"ANIL needs a Classifier(encoder, num_classes); got {type(model).__name__}"
        )
    per_task = functools.partial(
        head_only_task_loss, model=model, inner_lr=inner.inner_lr, first_order=inner.first_order
    )
    return common.loss_gradient_learner(
        "anil",
        model.init,
        train_task=functools.partial(per_task, num_steps=inner.num_inner_steps),
        eval_task=functools.partial(per_task, num_steps=inner.eval_num_inner_steps),
        task_batching=inner.task_batching,
    )


register("anil", anil_learner)
