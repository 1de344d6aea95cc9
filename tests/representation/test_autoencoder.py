"""Multimodal autoencoder and the reconstruction losses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.representation import MultimodalAutoencoder, autoencoder_loss
from mmjax.representation.networks import bernoulli_nll, reconstruction_loss, squared_error
from tests.representation.conftest import short_pretrain


def batch(b=3, length=8, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.uniform(size=(b, size, size, 1)) > 0.8, jnp.float32),
        "strokes": jnp.asarray(rng.normal(size=(b, length, 3)), jnp.float32),
        "mask": jnp.ones((b, 2), jnp.float32),
    }


def test_losses_have_their_closed_forms():
    logits = jnp.array([[0.0, 2.0]])
    targets = jnp.array([[1.0, 0.0]])
    np.testing.assert_allclose(
        float(bernoulli_nll(logits, targets)[0]), np.log(2) + np.log1p(np.exp(2.0)), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(squared_error(jnp.ones((1, 2, 3)), jnp.zeros((1, 2, 3)))[0]), 6.0
    )


def test_autoencoder_shapes_and_masked_targets_are_ignored():
    model = MultimodalAutoencoder(
        features=4,
        latent=6,
        image_shape=(8, 8, 1),
        stroke_length=8,
        hidden=16,
        image_blocks=2,
        stroke_layers=1,
    )
    inputs = batch()
    params = model.init(jax.random.PRNGKey(0), inputs)
    z, recon = model.apply(params, inputs)
    chex.assert_shape(z, (3, 6))
    chex.assert_shape(recon["image"], (3, 8, 8, 1))
    chex.assert_shape(recon["strokes"], (3, 8, 3))
    # Strokes missing for sample 1: its strokes (even NaN) neither reach the latent nor the loss.
    mask = jnp.array([[1, 1], [1, 0], [1, 1]], jnp.float32)
    clean = dict(inputs, mask=mask)
    poisoned = dict(clean, strokes=clean["strokes"].at[1].set(jnp.nan))
    loss_clean, _ = autoencoder_loss(model, params, clean)
    loss_poisoned, _ = autoencoder_loss(model, params, poisoned)
    assert np.isfinite(float(loss_poisoned))
    np.testing.assert_allclose(float(loss_poisoned), float(loss_clean), rtol=1e-6)
    per_sample, parts = reconstruction_loss(model.apply(params, clean)[1], clean, stroke_weight=2.0)
    np.testing.assert_allclose(
        per_sample, parts["image"] + 2.0 * parts["strokes"] * np.array([1, 0, 1]), rtol=1e-6
    )
    with pytest.raises(ValueError, match="inputs\\['mask'\\] has shape"):
        model.apply(params, dict(inputs, mask=jnp.ones((2, 3))))
    with pytest.raises(ValueError, match="every modality masked"):
        model.apply(params, dict(inputs, mask=jnp.array([[1, 1], [0, 0], [1, 0]], jnp.float32)))


@pytest.mark.slow
def test_autoencoder_loss_drops_on_real_omniglot(multimodal_train):
    first, last = short_pretrain(
        "autoencoder", multimodal_train, steps=30, batch_size=16, learning_rate=3e-3
    )
    assert np.isfinite(last) and last < 0.6 * first, (first, last)
