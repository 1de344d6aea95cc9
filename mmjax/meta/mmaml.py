"""Multimodal MAML (Vuorio et al. 2019): task-aware FiLM modulation before MAML's inner loop.

A *task encoder* reads the support set, embedding each example with its own copy of the
model's encoder, appending its target (one-hot label, or the regression value), passing the
pair through an MLP and mean-pooling over the set (permutation invariant). A zero-initialised
linear layer turns the pooled code into FiLM parameters ``γ, β ∈ R^d`` that modulate the
model's hidden features ``h = encoder(x)`` as ``h (1 + γ) + β``
(:func:`mmjax.fusion.film`) before its head. MAML's inner loop then adapts the model
parameters on the support set with the modulation fixed; the task encoder is meta-learned in
the outer loop only. At ``γ = β = 0`` (the initialisation) MMAML is exactly MAML.

This module modulates the encoder's output features (the last hidden layer), which every
``Classifier`` exposes; the paper modulates every hidden layer of its network.

Meta-parameters: ``{"model": Classifier variables, "modulation": TaskEncoder variables}``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from typing_extensions import Unpack

from mmjax.data.episodes import Episode
from mmjax.fusion.film import film
from mmjax.meta import common, maml
from mmjax.meta import task_batching as batching
from mmjax.meta.anil import encode, head_logits
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner, register

LOSSES = ("cross_entropy", "mse")


class TaskEncoder(nn.Module):
    """Support set -> FiLM parameters ``(γ, β)``, each ``[features]``.

    Attributes:
      embedder: module mapping inputs to ``[n, e]`` (a copy of the model's encoder).
      features: width ``d`` of the modulated features.
      hidden_sizes: MLP widths applied to each ``[embedding, target]`` before pooling.

    Call: ``inputs`` (leaves ``[n, ...]``), ``targets: [n, t]`` -> ``(gamma, beta)``. The
    output layer is zero-initialised, so an untrained task encoder gives ``γ = β = 0``.
    """

    embedder: nn.Module
    features: int
    hidden_sizes: Sequence[int] = (64,)

    @nn.compact
    def __call__(self, inputs: chex.ArrayTree, targets: chex.Array) -> tuple[jax.Array, jax.Array]:
        x = jnp.concatenate([self.embedder(inputs), targets.astype(jnp.float32)], axis=-1)
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
        pooled = jnp.mean(x, axis=0)  # permutation-invariant set code
        out = nn.Dense(2 * self.features, kernel_init=nn.initializers.zeros, name="film")(pooled)
        gamma, beta = jnp.split(out, 2, axis=-1)
        return gamma, beta


def modulated_apply(model: nn.Module, params: Params, inputs, gamma, beta) -> jax.Array:
    """``head(film(encoder(inputs), γ, β))`` of a ``Classifier`` -> ``[n, num_classes]``."""
    return head_logits(
        model, params["params"]["head"], film(encode(model, params, inputs), gamma, beta)
    )


def _targets(labels: chex.Array, *, loss: str, ways: int) -> jax.Array:
    if loss == "cross_entropy":
        return jax.nn.one_hot(labels, ways)
    return labels.reshape(labels.shape[0], -1)


def modulated_task_loss(
    meta_params: Params,
    episode: Episode,
    *,
    model: nn.Module,
    task_encoder: TaskEncoder,
    loss: str,
    inner_lr: float,
    num_steps: int,
    first_order: bool = False,
) -> tuple[chex.Array, dict]:
    """Modulate from the support set, adapt by MAML on it, then the query loss and metrics.

    ``episode``: one task (no task axis); returns a scalar loss and metrics (those of
    :func:`mmjax.meta.maml.task_loss` plus ``film_norm``, the norm of ``(γ, β)``).
    """
    gamma, beta = task_encoder.apply(
        meta_params["modulation"],
        episode.support_inputs,
        _targets(episode.support_labels, loss=loss, ways=model.num_classes),
    )
    apply_fn = lambda params, inputs: modulated_apply(model, params, inputs, gamma, beta)
    loss_fn = (
        common.classification_loss(apply_fn)
        if loss == "cross_entropy"
        else common.regression_loss(apply_fn)
    )
    query_loss, metrics = maml.task_loss(
        meta_params["model"],
        episode,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        num_steps=num_steps,
        first_order=first_order,
    )
    metrics = dict(metrics, film_norm=jnp.sqrt(jnp.sum(gamma**2) + jnp.sum(beta**2)))
    return query_loss, metrics


def mmaml_learner(
    model: nn.Module,
    *,
    task_hidden_sizes: Sequence[int] = (64,),
    loss: str = "cross_entropy",
    **settings: Unpack[common.InnerLoopSettings],
) -> MetaLearner:
    """MMAML on a ``Classifier`` ``model``.

    Args:
      model: ``Classifier(encoder, num_classes)`` (``num_classes=1`` for regression).
      task_hidden_sizes: task-encoder MLP widths.
      loss: ``"cross_entropy"`` (classification; metrics ``loss``, ``accuracy``) or ``"mse"``
        (regression, float labels; metrics ``loss``, ``mse``).
      **settings: MAML's inner loop (:class:`~mmjax.meta.common.InnerLoopSettings`).
    """
    inner = common.check_learner_settings(settings)
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not one of {', '.join(LOSSES)}")
    if not hasattr(model, "encoder") or not hasattr(model, "num_classes"):
        raise ValueError(
            f"MMAML needs a Classifier(encoder, num_classes); got {type(model).__name__}"
        )

    def make_task_encoder(features: int) -> TaskEncoder:
        return TaskEncoder(model.encoder.clone(), features, tuple(task_hidden_sizes))

    def init(key: chex.PRNGKey, example_inputs: chex.ArrayTree) -> Params:
        model_key, task_key = jax.random.split(key)
        params = model.init(model_key, example_inputs)
        features = jax.eval_shape(lambda p, x: encode(model, p, x), params, example_inputs).shape[
            -1
        ]
        n = jax.tree.leaves(example_inputs)[0].shape[0]
        width = model.num_classes if loss == "cross_entropy" else 1
        modulation = make_task_encoder(features).init(
            task_key, example_inputs, jnp.zeros((n, width))
        )
        return {"model": params, "modulation": modulation}

    def task_settings(meta_params: Params, steps: int) -> dict:
        features = meta_params["modulation"]["params"]["film"]["bias"].shape[-1] // 2
        return dict(
            model=model,
            task_encoder=make_task_encoder(features),
            loss=loss,
            inner_lr=inner.inner_lr,
            num_steps=steps,
            first_order=inner.first_order,
        )

    def learner_meta_grad(meta_params: Params, episodes: Episode) -> tuple[Params, dict]:
        per_task = functools.partial(
            modulated_task_loss, **task_settings(meta_params, inner.num_inner_steps)
        )
        return batching.grad_over_tasks(per_task, meta_params, episodes, inner.task_batching)

    def evaluate(meta_params: Params, episodes: Episode) -> dict:
        per_task = functools.partial(
            modulated_task_loss, **task_settings(meta_params, inner.eval_num_inner_steps)
        )
        return batching.metrics_per_task(per_task, meta_params, episodes, inner.task_batching)

    return MetaLearner(name="mmaml", init=init, meta_grad=learner_meta_grad, evaluate=evaluate)


register("mmaml", mmaml_learner)
