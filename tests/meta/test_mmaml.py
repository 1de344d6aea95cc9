"""MMAML: equals MAML at γ = β = 0; the modulation is meta-learned and permutation invariant."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.episodes import Episode
from mmjax.meta import maml, mmaml
from mmjax.meta.learner import make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP
from tests.precision import float64, to_float64

TASKS, WAYS, SHOTS, DIM = 4, 3, 2, 5


@pytest.fixture(scope="module")
def setup():
    model = Classifier(MLP((8,), activation=jnp.tanh, activate_final=True), num_classes=WAYS)
    keys = jax.random.split(jax.random.key(0), 2)
    labels = jnp.tile(jnp.arange(WAYS).repeat(SHOTS), (TASKS, 1))
    episodes = Episode(
        jax.random.normal(keys[0], (TASKS, WAYS * SHOTS, DIM)),
        labels,
        jax.random.normal(keys[1], (TASKS, WAYS * SHOTS, DIM)),
        labels,
    )
    learner = make_learner("mmaml", model, inner_lr=0.4, num_inner_steps=2, task_hidden_sizes=(16,))
    meta = learner.init(jax.random.key(1), episodes.support_inputs[0])
    return model, episodes, learner, meta


def test_zero_modulation_equals_maml(setup):
    with float64():  # an exactness claim: compared in float64
        model, episodes, learner, meta = setup
        episodes, meta = to_float64((episodes, meta))
        film = meta["modulation"]["params"]["film"]
        assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(film))  # γ = β = 0
        grads, metrics = jax.jit(learner.meta_grad)(meta, episodes)
        kwargs = dict(loss_fn=maml.classification_loss(model.apply), inner_lr=0.4, num_steps=2)
        want, want_metrics = jax.jit(lambda p: maml.meta_grad(p, episodes, **kwargs))(meta["model"])
        chex.assert_trees_all_close(grads["model"], want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(metrics["film_norm"], 0.0)
        maml_eval = jax.jit(jax.vmap(lambda e: maml.task_loss(meta["model"], e, **kwargs)[1]))(
            episodes
        )
        np.testing.assert_allclose(
            jax.jit(learner.evaluate)(meta, episodes)["loss"],
            maml_eval["loss"],
            rtol=1e-10,
            atol=1e-12,
        )
        # The FiLM output layer gets a gradient, so the modulation is meta-learned.
        assert float(jnp.max(jnp.abs(grads["modulation"]["params"]["film"]["kernel"]))) > 1e-6


def test_nonzero_modulation_changes_the_loss(setup):
    _, episodes, learner, meta = setup
    modulated = jax.tree.map(lambda x: x, meta)
    film = modulated["modulation"]["params"]["film"]
    film["bias"] = jnp.linspace(-1.0, 1.0, film["bias"].shape[0])
    evaluate = jax.jit(learner.evaluate)
    before = evaluate(meta, episodes)["loss"]
    after = evaluate(modulated, episodes)["loss"]
    assert np.max(np.abs(np.asarray(after) - np.asarray(before))) > 1e-3


def test_task_encoder_is_permutation_invariant(setup):
    with float64():  # an exactness claim: compared in float64
        model, episodes, _, meta = setup
        episodes, meta = to_float64((episodes, meta))
        encoder = mmaml.TaskEncoder(model.encoder.clone(), 8, (16,))
        modulation = jax.tree.map(
            lambda x: x + 0.1 * jnp.ones_like(x), meta["modulation"]
        )  # non-zero FiLM layer
        x, labels = episodes.support_inputs[0], jax.nn.one_hot(episodes.support_labels[0], WAYS)
        gamma, beta = encoder.apply(modulation, x, labels)
        chex.assert_shape([gamma, beta], (8,))
        order = jnp.array([3, 0, 5, 1, 4, 2])
        gamma2, beta2 = encoder.apply(modulation, x[order], labels[order])
        np.testing.assert_allclose(gamma, gamma2, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(beta, beta2, rtol=1e-10, atol=1e-12)
        assert float(jnp.max(jnp.abs(gamma))) > 1e-3


def test_regression_loss_mode():
    model = Classifier(MLP((8,), activate_final=True), num_classes=1)
    learner = make_learner("mmaml", model, inner_lr=0.01, num_inner_steps=1, loss="mse")
    x = jnp.linspace(-1, 1, 12).reshape(2, 6, 1)
    y = 2.0 * x[..., 0]
    episodes = Episode(x, y, x, y)
    meta = learner.init(jax.random.key(0), x[0])
    grads, metrics = jax.jit(learner.meta_grad)(meta, episodes)
    assert {"loss", "mse", "film_norm"} <= set(metrics)
    np.testing.assert_allclose(metrics["loss"], metrics["mse"])
    with pytest.raises(ValueError, match="loss='hinge' is not one of cross_entropy, mse"):
        make_learner("mmaml", model, inner_lr=0.01, num_inner_steps=1, loss="hinge")
