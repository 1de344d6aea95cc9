"""Symmetric InfoNCE with a learnable temperature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.representation import info_nce
from mmjax.representation.contrastive import init_log_temperature
from tests.representation.conftest import short_pretrain


def test_closed_form_for_orthonormal_aligned_pairs():
    batch, t = 6, 0.5
    a = jnp.eye(batch, 8) * 3.0  # normalised inside
    loss, metrics = info_nce(a, a, init_log_temperature(t))
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + (batch - 1)))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["temperature"]), t, rtol=1e-6)
    assert float(metrics["accuracy"]) == 1.0


def test_aligned_pairs_minimise_the_loss():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    log_t = init_log_temperature(0.1)
    aligned, _ = info_nce(a, a, log_t)
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(16)
        shuffled, _ = info_nce(a, a[perm], log_t)
        assert float(aligned) < float(shuffled)
    noisy, _ = info_nce(a, a + 0.3 * jnp.asarray(rng.normal(size=(16, 8)), jnp.float32), log_t)
    assert float(aligned) <= float(noisy)
    # symmetric in its two arguments
    b = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    np.testing.assert_allclose(
        float(info_nce(a, b, log_t)[0]), float(info_nce(b, a, log_t)[0]), rtol=1e-6
    )


def test_temperature_is_learnable_and_invalid_pairs_are_ignored():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    grad = jax.grad(lambda t: info_nce(a, b, t)[0])(init_log_temperature(0.1))
    assert np.isfinite(float(grad)) and float(grad) != 0
    valid = jnp.array([1, 1, 0, 1, 1, 0, 1, 1], bool)
    keep = np.flatnonzero(np.asarray(valid))
    poisoned = jnp.where(valid[:, None], b, jnp.nan)
    masked, _ = info_nce(a, poisoned, init_log_temperature(0.1), valid=valid)
    subset, _ = info_nce(a[keep], b[keep], init_log_temperature(0.1))
    np.testing.assert_allclose(float(masked), float(subset), rtol=1e-5)


def test_bad_inputs_raise_naming_the_argument():
    a = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="b has shape \\(5, 3\\)"):
        info_nce(a, jnp.ones((5, 3)), init_log_temperature())
    with pytest.raises(ValueError, match="valid has shape"):
        info_nce(a, a, init_log_temperature(), valid=jnp.ones(3))
    with pytest.raises(ValueError, match="temperature=0"):
        init_log_temperature(0)


@pytest.mark.slow
def test_contrastive_loss_drops_on_real_omniglot(multimodal_train):
    first, last = short_pretrain(
        "contrastive", multimodal_train, steps=60, batch_size=32, learning_rate=5e-3
    )
    assert np.isfinite(last) and last < first - 0.15, (first, last)
