"""Multimodal VAE: PoE / MoE / MoPoE of Gaussian experts, masks, KL, sampling, real-data ELBO."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.representation.vae import (
    combine_experts,
    gaussian_kl,
    mixture_of_experts,
    mopoe,
    posterior_mean,
    product_of_experts,
    reparameterize,
    subsets,
)
from tests.representation.conftest import short_pretrain


def experts(seed=0, m=3, b=4, d=5):
    rng = np.random.default_rng(seed)
    return (
        jnp.asarray(rng.normal(size=(m, b, d)), jnp.float32),
        jnp.asarray(rng.normal(scale=0.7, size=(m, b, d)), jnp.float32),
    )


def test_poe_equals_closed_form_product_of_gaussians():
    means, logvars = experts()
    mask = jnp.ones(means.shape[:2])
    mean, logvar = product_of_experts(means, logvars, mask, prior=True)
    # Closed form per coordinate: N(0,1) * prod_m N(mu_m, s_m^2) ∝ N(mu, s^2) with
    # 1/s^2 = 1 + sum 1/s_m^2 and mu = s^2 sum mu_m / s_m^2.
    var = np.exp(np.asarray(logvars, np.float64))
    precision = 1.0 + np.sum(1 / var, axis=0)
    expected_mean = np.sum(np.asarray(means, np.float64) / var, axis=0) / precision
    chex.assert_trees_all_close(mean, expected_mean, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(logvar, -np.log(precision), rtol=1e-5, atol=1e-6)
    # Two 1-D experts and no prior: the textbook product of two Gaussian densities.
    m2 = jnp.array([[[1.0]], [[3.0]]])
    lv2 = jnp.log(jnp.array([[[1.0]], [[4.0]]]))
    mean2, logvar2 = product_of_experts(m2, lv2, jnp.ones((2, 1)), prior=False)
    np.testing.assert_allclose(float(mean2[0, 0]), (1 * 4 + 3 * 1) / 5, rtol=1e-6)
    np.testing.assert_allclose(float(jnp.exp(logvar2[0, 0])), 4 / 5, rtol=1e-6)


def test_masked_expert_does_not_change_the_posterior_even_holding_nan():
    means, logvars = experts()
    mask = jnp.array([[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 1, 1]], jnp.float32)
    poisoned_means = jnp.where(mask[..., None] > 0, means, jnp.nan)
    poisoned_logvars = jnp.where(mask[..., None] > 0, logvars, jnp.inf)
    for b in range(4):
        keep = np.flatnonzero(np.asarray(mask[:, b]))
        expected = product_of_experts(
            means[keep][:, b : b + 1], logvars[keep][:, b : b + 1], jnp.ones((len(keep), 1))
        )
        got = product_of_experts(poisoned_means, poisoned_logvars, mask)
        chex.assert_trees_all_close(got[0][b], expected[0][0], rtol=1e-6)
        chex.assert_trees_all_close(got[1][b], expected[1][0], rtol=1e-6)
    # MoE: the masked expert has weight 0; MoPoE: every subset holding it has weight 0.
    _, _, moe_w = mixture_of_experts(poisoned_means, poisoned_logvars, mask)
    chex.assert_trees_all_close(moe_w, mask / mask.sum(0), rtol=1e-6)
    mp_means, mp_logvars, mp_w = mopoe(poisoned_means, poisoned_logvars, mask)
    rows = subsets(3)
    available = np.all((rows[:, :, None] == 0) | (np.asarray(mask)[None] > 0), axis=1)
    chex.assert_trees_all_close(mp_w, available / available.sum(0), rtol=1e-6)
    assert np.all(np.isfinite(mp_means)) and np.all(np.isfinite(mp_logvars))
    # gradients w.r.t. masked entries are exactly zero
    grad = jax.grad(lambda m: product_of_experts(m, logvars, mask)[0].sum())(means)
    assert np.all(np.asarray(grad)[np.asarray(mask) == 0] == 0)


def test_mopoe_components_are_the_subset_products():
    means, logvars = experts(m=2, b=3)
    mask = jnp.ones((2, 3))
    comp_means, comp_logvars, weights = mopoe(means, logvars, mask)
    np.testing.assert_array_equal(subsets(2), [[1, 0], [0, 1], [1, 1]])
    chex.assert_trees_all_close(comp_means[0], means[0], rtol=1e-6)  # one expert, no prior
    chex.assert_trees_all_close(comp_logvars[1], logvars[1], rtol=1e-5, atol=1e-6)
    both = product_of_experts(means, logvars, mask, prior=False)
    chex.assert_trees_all_close(comp_means[2], both[0], rtol=1e-6)
    chex.assert_trees_all_close(weights, jnp.full((3, 3), 1 / 3), rtol=1e-6)


def test_one_compiled_function_serves_every_subset():
    means, logvars = experts(m=2, b=2)
    traces = []

    @jax.jit
    def embed(mask):
        traces.append(None)
        out = {}
        for name in ("poe", "moe", "mopoe"):
            comp, _, w = combine_experts(name, means, logvars, mask)
            out[name] = posterior_mean(comp, w)
        return out

    for mask in ([[1, 1], [1, 1]], [[1, 0], [0, 1]], [[0, 1], [1, 0]]):
        out = embed(jnp.asarray(mask, jnp.float32))
        for b in range(2):
            present = np.flatnonzero(np.asarray(mask)[:, b])
            if len(present) == 1:  # a single expert: MoE and MoPoE give that expert's mean
                chex.assert_trees_all_close(out["moe"][b], means[present[0], b], rtol=1e-6)
                chex.assert_trees_all_close(out["mopoe"][b], means[present[0], b], rtol=1e-6)
    assert len(traces) == 1


def test_gaussian_kl_equals_analytic_value():
    mean = jnp.array([[1.0, -0.5]])
    logvar = jnp.log(jnp.array([[2.0, 0.25]]))
    expected = 0.5 * (2 + 1 - 1 - np.log(2)) + 0.5 * (0.25 + 0.25 - 1 - np.log(0.25))
    np.testing.assert_allclose(float(gaussian_kl(mean, logvar)[0]), expected, rtol=1e-6)
    assert float(gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0
    # Monte Carlo: E_q[log q - log p] with 200k reparameterised samples.
    z = reparameterize(
        jax.random.PRNGKey(0),
        jnp.broadcast_to(mean, (200_000, 2)),
        jnp.broadcast_to(logvar, (200_000, 2)),
    )
    var = jnp.exp(logvar)
    log_q = -0.5 * (jnp.square(z - mean) / var + logvar + jnp.log(2 * jnp.pi))
    log_p = -0.5 * (jnp.square(z) + jnp.log(2 * jnp.pi))
    np.testing.assert_allclose(float(jnp.mean(jnp.sum(log_q - log_p, -1))), expected, atol=0.02)


def test_reparameterize_moments_and_gradient():
    mean, logvar = jnp.full((100_000, 1), 2.0), jnp.full((100_000, 1), np.log(9.0))
    z = reparameterize(jax.random.PRNGKey(1), mean, logvar)
    np.testing.assert_allclose(float(z.mean()), 2.0, atol=0.03)
    np.testing.assert_allclose(float(z.std()), 3.0, atol=0.03)
    same = reparameterize(jax.random.PRNGKey(1), mean, logvar)
    chex.assert_trees_all_equal(z, same)
    grad = jax.grad(lambda m: reparameterize(jax.random.PRNGKey(2), m, logvar[:1]).sum())(mean[:1])
    chex.assert_trees_all_close(grad, jnp.ones((1, 1)))


def test_bad_inputs_raise_naming_the_argument():
    means, logvars = experts(m=2, b=3)
    with pytest.raises(ValueError, match="mask has shape"):
        product_of_experts(means, logvars, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="every expert masked: \\[1\\]"):
        product_of_experts(means, logvars, jnp.array([[1, 0, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match="logvars has shape"):
        mopoe(means, logvars[:, :2], jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="combination='sum'"):
        combine_experts("sum", means, logvars, jnp.ones((2, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae_poe", "vae_moe", "vae_mopoe"])
def test_vae_elbo_drops_on_real_omniglot(name, multimodal_train):
    first, last = short_pretrain(
        name, multimodal_train, steps=30, batch_size=16, learning_rate=3e-3
    )
    assert np.isfinite(last) and last < 0.6 * first, (first, last)
