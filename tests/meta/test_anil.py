"""ANIL: the inner loop adapts only the head; it equals MAML with a zero encoder rate."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.episodes import Episode
from mmjax.meta import anil, maml
from mmjax.meta.learner import make_learner
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP
from tests.precision import float64, to_float64

WAYS, SHOTS, DIM = 3, 2, 5


def _setup():
    model = Classifier(MLP((8,), activation=jnp.tanh, activate_final=True), num_classes=WAYS)
    keys = jax.random.split(jax.random.key(0), 3)
    centers = jax.random.normal(keys[2], (WAYS, DIM))
    labels = jnp.arange(WAYS).repeat(SHOTS)
    support = centers[labels] + 0.3 * jax.random.normal(keys[0], (4, WAYS * SHOTS, DIM))
    query = centers[labels] + 0.3 * jax.random.normal(keys[1], (4, WAYS * SHOTS, DIM))
    episodes = Episode(support, jnp.tile(labels, (4, 1)), query, jnp.tile(labels, (4, 1)))
    return model, model.init(jax.random.key(1), support[0]), episodes


def test_inner_loop_leaves_encoder_bit_identical_and_changes_head():
    model, params, episodes = _setup()
    adapted, losses = anil.adapt_head(
        model,
        params,
        episodes.support_inputs[0],
        episodes.support_labels[0],
        inner_lr=0.5,
        num_steps=5,
    )
    jax.tree.map(
        np.testing.assert_array_equal, adapted["params"]["encoder"], params["params"]["encoder"]
    )
    for new, old in zip(
        jax.tree.leaves(adapted["params"]["head"]), jax.tree.leaves(params["params"]["head"])
    ):
        assert np.max(np.abs(np.asarray(new) - np.asarray(old))) > 1e-3
    loss_fn = maml.classification_loss(model.apply)
    after = loss_fn(adapted, episodes.support_inputs[0], episodes.support_labels[0])[0]
    chex.assert_shape(losses, (5,))
    assert after < 0.8 * losses[0]


def test_meta_grad_equals_maml_with_zero_encoder_rate():
    with float64():  # an exactness claim: compared in float64
        model, params, episodes = _setup()
        params, episodes = to_float64((params, episodes))
        learner = make_learner("anil", model, inner_lr=0.4, num_inner_steps=2)
        grads, metrics = jax.jit(learner.meta_grad)(params, episodes)
        rates = {
            "params": {
                "encoder": jax.tree.map(jnp.zeros_like, params["params"]["encoder"]),
                "head": jax.tree.map(lambda p: jnp.full_like(p, 0.4), params["params"]["head"]),
            }
        }
        loss_fn = maml.classification_loss(model.apply)
        want, want_metrics = jax.jit(
            lambda p, r: maml.meta_grad(p, episodes, loss_fn=loss_fn, inner_lr=r, num_steps=2)
        )(params, rates)
        chex.assert_trees_all_close(grads, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-10, atol=1e-12)
        # The encoder is still meta-learned: its outer gradient is non-zero.
        assert (
            max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["params"]["encoder"]))
            > 1e-5
        )
        per_task = jax.jit(learner.evaluate)(params, episodes)
        chex.assert_shape([per_task["accuracy"], per_task["loss"]], (4,))
