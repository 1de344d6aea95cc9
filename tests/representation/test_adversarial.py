"""Gradient reversal and the modality discriminator."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.representation import (
    ModalityDiscriminator,
    make_objective,
    modality_adversarial_loss,
    pretrain,
)
from mmjax.representation.adversarial import gradient_reversal
from tests.representation.conftest import SMALL, window_means


def test_gradient_reversal_is_identity_forward_and_negates_the_gradient_exactly():
    x = jnp.array([0.5, -1.0, 2.0])
    f = lambda v: jnp.sum(jnp.sin(v) * v**2)
    chex.assert_trees_all_equal(gradient_reversal(x, 1.0), x)
    identity = jax.grad(f)(x)
    reversed_ = jax.grad(lambda v: f(gradient_reversal(v, 1.0)))(x)
    chex.assert_trees_all_equal(reversed_, -identity)
    scaled = jax.grad(lambda v: f(gradient_reversal(v, 0.25)))(x)
    chex.assert_trees_all_close(scaled, -0.25 * identity, rtol=1e-7)
    jitted = jax.jit(jax.grad(lambda v: f(gradient_reversal(v, 2.0))))(x)
    chex.assert_trees_all_close(jitted, -2.0 * identity, rtol=1e-6)


def test_discriminator_learns_and_encoders_get_the_reversed_gradient():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
    mask = jnp.array([[1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 0]], jnp.float32).T  # [B, M]
    disc = ModalityDiscriminator(hidden=8)
    params = disc.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))

    def loss(p, e, scale):
        return modality_adversarial_loss(disc.apply, p, e, mask, scale=scale)[0]

    def plain(p, e):  # the same cross-entropy without reversal
        flat = e.reshape(-1, 4)
        logits = disc.apply(p, flat)
        labels = jnp.repeat(jnp.arange(2), 6)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)[:, 0]
        present = mask.T.reshape(-1) > 0  # as the modality-major rows of flat
        return jnp.sum(jnp.where(present, ce, 0)) / present.sum()

    np.testing.assert_allclose(float(loss(params, z, 1.0)), float(plain(params, z)), rtol=1e-6)
    g_params, g_z = jax.grad(loss, argnums=(0, 1))(params, z, 0.5)
    p_params, p_z = jax.grad(plain, argnums=(0, 1))(params, z)
    chex.assert_trees_all_close(g_params, p_params, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(g_z, -0.5 * p_z, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(g_z[0, 3]).max()) == 0 and float(jnp.abs(g_z[1, 5]).max()) == 0
    with pytest.raises(ValueError, match=r"mask has shape \(2, 6\); expected \[B, M\].*\[6, 2\]"):
        modality_adversarial_loss(disc.apply, params, z, mask.T)  # [M, B] is refused
    with pytest.raises(ValueError, match="scale=-1"):
        modality_adversarial_loss(disc.apply, params, z, mask, scale=-1)


@pytest.mark.slow
def test_adversarial_alignment_lowers_its_contrastive_loss_on_real_omniglot(multimodal_train):
    objective = make_objective("adversarial", **SMALL)
    _, history = pretrain(
        objective,
        multimodal_train,
        jax.random.PRNGKey(0),
        steps=60,
        batch_size=32,
        learning_rate=5e-3,
    )
    first, last = window_means(history, "contrastive")
    assert np.isfinite(last) and last < first - 0.1, (first, last)
    assert all(np.isfinite(h["discriminator_loss"]) for h in history)
