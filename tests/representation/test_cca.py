"""Linear CCA (closed form) and the deep CCA loss."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.representation import cca_loss, recall_at_k
from mmjax.representation.cca import (
    apply_cca_projection,
    canonical_correlations,
    fit_cca_projection,
    linear_cca,
    top_singular_sum,
)
from tests.representation.conftest import short_pretrain

RHOS = np.array([0.9, 0.6, 0.3])


def synthetic_pair(n, seed=0, dx=5, dy=4):
    """x, y whose canonical correlations are RHOS (then 0), hidden behind random linear maps."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 3))
    x_latent = np.concatenate([shared, rng.normal(size=(n, dx - 3))], axis=1)
    y_own = rng.normal(size=(n, 3))
    y_latent = np.concatenate(
        [RHOS * shared + np.sqrt(1 - RHOS**2) * y_own, rng.normal(size=(n, dy - 3))], axis=1
    )
    x = x_latent @ rng.normal(size=(dx, dx)) + 3.0
    y = y_latent @ rng.normal(size=(dy, dy)) - 1.0
    return x.astype(np.float32), y.astype(np.float32)


def test_linear_cca_recovers_known_canonical_correlations():
    x, y = synthetic_pair(20_000)
    result = linear_cca(x, y, reg=1e-6)
    chex.assert_shape(result.correlations, (4,))
    np.testing.assert_allclose(result.correlations[:3], RHOS, atol=0.02)
    assert float(result.correlations[3]) < 0.03
    # The returned directions give variates with exactly those correlations.
    u = (x - result.x_mean) @ result.x_weights
    v = (y - result.y_mean) @ result.y_weights
    sample = [np.corrcoef(u[:, i], v[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(sample, result.correlations[:3], atol=1e-3)
    np.testing.assert_allclose(np.var(u, axis=0, ddof=1), 1.0, atol=1e-3)


def test_float64_option_agrees_and_requires_x64():
    x, y = synthetic_pair(2_000, seed=1)
    with pytest.raises(ValueError, match="jax_enable_x64"):
        linear_cca(x, y, dtype=jnp.float64)
    with jax.enable_x64(True):
        double = linear_cca(x.astype(np.float64), y.astype(np.float64), reg=1e-6, dtype=jnp.float64)
        assert double.correlations.dtype == jnp.float64
        loss64, _ = cca_loss(x, y, reg=1e-6, dtype=jnp.float64)
    single = linear_cca(x, y, reg=1e-6)
    np.testing.assert_allclose(single.correlations, double.correlations, atol=1e-4)
    np.testing.assert_allclose(-float(loss64), float(np.sum(double.correlations)), rtol=1e-6)


def test_cca_loss_is_minus_the_total_correlation():
    x, y = synthetic_pair(5_000, seed=2)
    loss, metrics = cca_loss(x, y, reg=1e-5)
    expected = float(np.sum(linear_cca(x, y, reg=1e-5).correlations))
    np.testing.assert_allclose(-float(loss), expected, rtol=1e-4)
    top2, _ = cca_loss(x, y, reg=1e-5, num_components=2)
    np.testing.assert_allclose(-float(top2), RHOS[0] + RHOS[1], atol=0.04)
    chex.assert_trees_all_close(
        canonical_correlations(x, y, reg=1e-5), linear_cca(x, y, reg=1e-5).correlations, atol=1e-4
    )


def test_deep_cca_loss_and_gradient_are_finite_for_batch_below_dimension():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(8, 32)), jnp.float32)  # batch 8 < dimension 32
    y = jnp.asarray(rng.normal(size=(8, 32)), jnp.float32)
    loss, grads = jax.value_and_grad(lambda a, b: cca_loss(a, b, reg=1e-3)[0], argnums=(0, 1))(x, y)
    assert np.isfinite(float(loss)) and -7.01 <= float(loss) < 0  # rank <= n - 1 = 7
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert float(jnp.abs(grads[0]).max()) > 0
    # Identical views with n < d: 7 correlations of (almost) 1; the loss is still finite.
    same, same_grad = jax.value_and_grad(lambda a: cca_loss(a, a, reg=1e-3)[0])(x)
    assert np.isfinite(float(same)) and np.all(np.isfinite(same_grad))
    np.testing.assert_allclose(float(same), -7.0, atol=0.05)


def test_top_singular_sum_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    matrix = jnp.asarray(
        rng.normal(size=(4, 3)), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    )
    direction = jnp.asarray(rng.normal(size=(4, 3)), matrix.dtype)
    grad = jax.grad(lambda m: top_singular_sum(m, 2))(matrix)
    eps = 1e-2
    numeric = (
        top_singular_sum(matrix + eps * direction, 2)
        - top_singular_sum(matrix - eps * direction, 2)
    ) / (2 * eps)
    np.testing.assert_allclose(
        float(jnp.sum(grad * direction)), float(numeric), rtol=2e-3, atol=2e-3
    )


def rotated_views(n, rng, mix, rotation, noise=0.3):
    """View 2 = (view 1 @ mix + noise) @ rotation: linearly related, not aligned coordinates."""
    x = rng.normal(size=(n, mix.shape[0]))
    y = (x @ mix + noise * rng.normal(size=(n, mix.shape[1]))) @ rotation
    return x.astype(np.float32), y.astype(np.float32)


def test_retrieval_in_the_fitted_cca_space_is_near_perfect_and_raw_is_chance():
    rng = np.random.default_rng(5)
    d = 16
    mix = rng.normal(size=(d, d))
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    train_x, train_y = rotated_views(3000, rng, mix, rotation)
    test_x, test_y = rotated_views(300, rng, mix, rotation)  # new samples, same maps
    raw = recall_at_k(test_x, test_y)
    assert raw["recall@1"] < 0.05 and raw["median_rank"] > 50, raw  # chance: 1/300

    projection = fit_cca_projection(train_x, train_y, dim=8, reg=1e-3)
    chex.assert_shape(
        (projection.image_weights, projection.stroke_weights, projection.image_mean),
        [(d, 8), (d, 8), (d,)],
    )
    assert np.all(np.diff(projection.correlations) <= 1e-6) and projection.correlations[-1] > 0.9
    image, strokes = apply_cca_projection(projection, test_x, test_y)
    chex.assert_shape((image, strokes), (300, 8))
    fitted = recall_at_k(image, strokes)
    assert fitted["recall@1"] > 0.95 and fitted["median_rank"] == 1.0, fitted

    # Control: the same fit on unpaired training rows learns nothing to retrieve with.
    shuffled = fit_cca_projection(train_x, train_y[rng.permutation(3000)], dim=8, reg=1e-3)
    control = recall_at_k(*apply_cca_projection(shuffled, test_x, test_y))
    assert control["recall@1"] < 0.05, control


def test_bad_inputs_raise_naming_the_argument():
    x, y = synthetic_pair(50)
    with pytest.raises(ValueError, match="reg=0"):
        linear_cca(x, y, reg=0)
    with pytest.raises(ValueError, match="reg=-1"):
        cca_loss(x, y, reg=-1.0)
    with pytest.raises(ValueError, match="x has 50 samples and y has 49"):
        cca_loss(x, y[:49])
    with pytest.raises(ValueError, match="num_components=5"):
        linear_cca(x, y, num_components=5)


@pytest.mark.slow
def test_deep_cca_raises_correlation_on_real_omniglot(multimodal_train):
    first, last = short_pretrain(
        "dcca", multimodal_train, steps=30, batch_size=16, learning_rate=3e-3
    )
    assert np.isfinite(last) and last < first - 0.5, (first, last)
