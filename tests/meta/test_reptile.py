"""Reptile: the pseudo-gradient against its closed form on a quadratic loss."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import reptile
from mmjax.meta.learner import make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP
from tests.precision import float64, to_float64

TASKS, SUPPORT, DIM = 3, 4, 5


def quadratic_loss(params, inputs, labels):
    """½‖θ − c‖² with the task's optimum ``c`` stored as every support row."""
    loss = 0.5 * jnp.sum((params["theta"] - inputs[0]) ** 2)
    return loss, {"loss": loss, "accuracy": jnp.zeros(())}


def _quadratic_tasks(key):
    centers = jax.random.normal(key, (TASKS, DIM))
    inputs = jnp.repeat(centers[:, None], SUPPORT, axis=1)
    labels = jnp.zeros((TASKS, SUPPORT), jnp.int32)
    return centers, Episode(inputs, labels, inputs, labels)


@pytest.mark.parametrize("inner_lr, num_steps", [(0.1, 1), (0.3, 4), (0.5, 7)])
def test_pseudo_gradient_and_sgd_update_match_closed_form(inner_lr, num_steps):
    centers, episodes = _quadratic_tasks(jax.random.key(0))
    theta = jax.random.normal(jax.random.key(1), (DIM,))
    grads, metrics = reptile.pseudo_gradient(
        {"theta": theta},
        episodes,
        loss_fn=quadratic_loss,
        inner_lr=inner_lr,
        num_steps=num_steps,
    )
    shrink = 1 - (1 - inner_lr) ** num_steps  # k SGD steps: φ = θ + shrink (c − θ)
    expected = -shrink * np.mean(np.asarray(centers) - np.asarray(theta), axis=0)
    np.testing.assert_allclose(grads["theta"], expected, rtol=1e-5, atol=1e-6)
    # Outer SGD with step ε is Reptile's interpolation θ + ε (φ̄ − θ).
    epsilon = 0.7
    optimizer = optax.sgd(epsilon)
    updates, _ = optimizer.update(grads, optimizer.init({"theta": theta}))
    new = optax.apply_updates({"theta": theta}, updates)["theta"]
    want = theta + epsilon * shrink * (centers.mean(axis=0) - theta)
    np.testing.assert_allclose(new, want, rtol=1e-5, atol=1e-6)
    # Query loss reported after adaptation: ½ (1 − shrink)² ‖c − θ‖², averaged over tasks.
    query = 0.5 * (1 - shrink) ** 2 * np.sum((np.asarray(centers) - np.asarray(theta)) ** 2, -1)
    np.testing.assert_allclose(metrics["loss"], query.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["support_loss"],
        np.mean(0.5 * np.sum((np.asarray(centers) - np.asarray(theta)) ** 2, -1)),
        rtol=1e-5,
    )


def test_adam_inner_first_step_moves_by_lr_times_sign():
    centers, episodes = _quadratic_tasks(jax.random.key(2))
    theta = jnp.zeros(DIM)
    grads, _ = reptile.pseudo_gradient(
        {"theta": theta},
        episodes,
        loss_fn=quadratic_loss,
        inner_lr=0.01,
        num_steps=1,
        inner_optimizer="adam",
    )
    # Adam's first step is lr · g / (|g| + eps) ≈ lr · sign(θ − c).
    expected = np.mean(0.01 * np.sign(np.asarray(theta) - np.asarray(centers)), axis=0)
    np.testing.assert_allclose(grads["theta"], expected, rtol=1e-4, atol=1e-7)


def test_learner_on_classifier_shapes_and_first_order():
    """Shapes, and the pseudo-gradient against theta - phi by hand (exact claim: float64)."""
    with float64():
        model = Classifier(MLP((8,), activate_final=True), num_classes=3)
        learner = make_learner("reptile", model, inner_lr=0.5, num_inner_steps=2)
        x = jax.random.normal(jax.random.key(3), (4, 6, 5), jnp.float64)
        labels = jnp.tile(jnp.arange(3).repeat(2), (4, 1))
        episodes = Episode(x, labels, x, labels)
        params = to_float64(learner.init(jax.random.key(4), x[0]))
        grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
        chex.assert_trees_all_equal_shapes(grads, params)
        assert {"loss", "accuracy", "support_loss"} <= set(metrics)
        # Training on the support = query set: adaptation must lower the loss below its start.
        assert metrics["loss"] < metrics["support_loss"]
        per_task = jax.jit(learner.evaluate)(params, episodes)
        chex.assert_shape([per_task["accuracy"], per_task["loss"]], (4,))
        # The pseudo-gradient equals θ − φ for a single task computed by hand.
        one = jax.tree.map(lambda a: a[:1], episodes)
        g1, _ = jax.jit(learner.meta_grad)(params, one)
        step = jax.jit(jax.grad(lambda p, i, labels: learner_loss(model, p, i, labels)))
        phi = params
        for _ in range(2):
            phi = jax.tree.map(
                lambda p, g: p - 0.5 * g, phi, step(phi, one.support_inputs[0], labels[0])
            )
        assert jax.tree.leaves(g1)[0].dtype == jnp.float64
        chex.assert_trees_all_close(
            g1, jax.tree.map(jnp.subtract, params, phi), rtol=1e-10, atol=1e-12
        )


def learner_loss(model, params, inputs, labels):
    logits = model.apply(params, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def test_unknown_inner_optimizer_lists_valid_ones():
    model = Classifier(MLP((8,)), num_classes=3)
    with pytest.raises(
        ValueError, match=r"inner_optimizer='rmsprop' is not one of \('sgd', 'adam'\)"
    ):
        reptile.reptile_learner(model, inner_lr=0.1, num_inner_steps=1, inner_optimizer="rmsprop")
    with pytest.raises(ValueError, match="inner_lr must be > 0"):
        reptile.reptile_learner(model, inner_lr=0.0, num_inner_steps=1)
