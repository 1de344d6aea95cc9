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

from mmjax.data.episodes import Episode
from mmjax.meta import maml
from mmjax.meta.learner import MetaLearner, Params, register


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
    features = encode(model, params, inputs)
    head_loss = maml.classification_loss(lambda head, x: head_logits(model, head, x))
    head, losses = maml.adapt(
        params["params"]["head"],
        features,
        labels,
        loss_fn=head_loss,
        inner_lr=inner_lr,
        num_steps=num_steps,
        first_order=first_order,
    )
    return with_head(params, head), losses


def task_loss(
    params: Params,
    episode: Episode,
    *,
    model: nn.Module,
    inner_lr: float,
    num_steps: int,
    first_order: bool = False,
) -> tuple[chex.Array, dict]:
    """Head-only adaptation on the support set, then the query loss and metrics of one task."""
    _check_classifier_params(params)
    support = encode(model, params, episode.support_inputs)
    query = encode(model, params, episode.query_inputs)
    head_loss = maml.classification_loss(lambda head, x: head_logits(model, head, x))
    head, losses = maml.adapt(
        params["params"]["head"],
        support,
        episode.support_labels,
        loss_fn=head_loss,
        inner_lr=inner_lr,
        num_steps=num_steps,
        first_order=first_order,
    )
    loss, metrics = head_loss(head, query, episode.query_labels)
    metrics = dict(metrics)
    if num_steps > 0:
        metrics["support_loss"] = losses[0]
    return loss, metrics


def meta_loss(
    params: Params, episodes: Episode, *, task_batching: str | int = "auto", **kwargs
) -> tuple[chex.Array, dict]:
    """Mean ANIL query loss over a task batch (leading task axis, mapped by ``task_batching``)."""
    per_task = functools.partial(task_loss, **kwargs)
    return maml.mean_over_tasks(per_task, params, episodes, task_batching)


def meta_grad(
    params: Params, episodes: Episode, *, task_batching: str | int = "auto", **kwargs
) -> tuple[Params, dict]:
    """Gradient of :func:`meta_loss` w.r.t. encoder and head initialisation, and metrics."""
    per_task = functools.partial(task_loss, **kwargs)
    return maml.grad_over_tasks(per_task, params, episodes, task_batching)


def anil_learner(
    model: nn.Module,
    *,
    inner_lr: float,
    num_inner_steps: int,
    eval_num_inner_steps: int | None = None,
    first_order: bool = False,
    task_batching: str | int = "auto",
) -> MetaLearner:
    """ANIL on a ``Classifier`` ``model`` (head adapted in the inner loop, encoder frozen there).

    Args:
      model: ``Classifier(encoder, num_classes)``.
      inner_lr: head SGD step size.
      num_inner_steps: inner steps during meta-training.
      eval_num_inner_steps: inner steps at evaluation (default ``num_inner_steps``).
      first_order: stop gradients through the inner gradients.
      task_batching: how the task batch is mapped
        (:func:`mmjax.meta.maml.resolve_task_batching`).
    """
    maml._check_settings(inner_lr=inner_lr, num_steps=num_inner_steps)
    eval_steps = num_inner_steps if eval_num_inner_steps is None else eval_num_inner_steps
    maml._check_settings(inner_lr=inner_lr, num_steps=eval_steps)
    maml.resolve_task_batching(task_batching)
    if not hasattr(model, "encoder") or not hasattr(model, "num_classes"):
        raise ValueError(
            f"ANIL needs a Classifier(encoder, num_classes); got {type(model).__name__}"
        )
    settings = dict(model=model, inner_lr=inner_lr, first_order=first_order)
    per_task = functools.partial(task_loss, num_steps=eval_steps, **settings)

    evaluate = functools.partial(maml.metrics_per_task, per_task, task_batching=task_batching)

    return MetaLearner(
        name="anil",
        init=model.init,
        meta_grad=functools.partial(
            meta_grad, num_steps=num_inner_steps, task_batching=task_batching, **settings
        ),
        evaluate=evaluate,
    )


register("anil", anil_learner)
