"""Tests for film() and FiLMFusion."""

import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.fusion import FiLMFusion
from mmjax.fusion.film import film


def test_film_function():
    x, gamma, beta = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0]), jnp.array([1.0, 3.0])
    np.testing.assert_allclose(film(x, gamma, beta), [2.5, 3.0])
    np.testing.assert_array_equal(film(x, jnp.zeros(2), jnp.zeros(2)), x)


def numpy_film_fusion(params, features, mask):
    mask = np.asarray(mask).T  # the oracle stacks modalities first: [M, B]
    masked = [
        np.where(mask[m][:, None], np.asarray(x, np.float64), 0) for m, x in enumerate(features)
    ]
    projected = masked[0] @ params["project"]["kernel"] + params["project"]["bias"]
    modulation = np.stack(
        [
            x @ params[f"condition_{m}"]["kernel"] + params[f"condition_{m}"]["bias"]
            for m, x in enumerate(masked[1:], start=1)
        ]
    )
    present = mask[1:, :, None]
    modulation = (modulation * present).sum(0) / np.maximum(present.sum(0), 1)
    gamma, beta = np.split(modulation, 2, axis=-1)
    return projected * (1 + gamma) + beta, projected


def test_film_fusion_matches_numpy_and_masked_conditioning_is_plain_projection(fusion_inputs):
    features = fusion_inputs.features()
    # Samples 0 and 1 have every conditioning modality masked.
    mask = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=bool)  # [B, M]
    module = FiLMFusion(features_out=4)
    params = fusion_inputs.random_params(module, features, mask)
    out, state = module.apply(
        params,
        fusion_inputs.corrupt_masked(features, mask, 2, "nonfinite"),
        mask,
        mutable=["intermediates"],
    )
    expected, projected = numpy_film_fusion(params["params"], features, mask)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:2], projected[:2], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(state["intermediates"]["gamma"][0][:2], 0.0)
    np.testing.assert_array_equal(state["intermediates"]["beta"][0][:2], 0.0)


def test_film_fusion_needs_two_modalities(fusion_inputs):
    features = fusion_inputs.features()[:1]
    with pytest.raises(ValueError, match=r"needs features for >= 2 modalities.*\[\(5, 3\)\]"):
        FiLMFusion(features_out=4).apply({}, features, np.ones((5, 1), bool))
