"""Tests for LateFusion against numpy oracles of its two weightings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.fusion import LateFusion


def head_logits(params, features):
    """``[M, batch, classes]`` logits of the per-modality heads, in numpy."""
    return np.stack(
        [
            np.asarray(x, np.float64) @ params[f"head_{m}"]["kernel"] + params[f"head_{m}"]["bias"]
            for m, x in enumerate(features)
        ]
    )


def test_mean_weighting_is_masked_mean_of_head_logits(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = LateFusion(num_classes=4)
    params = fusion_inputs.random_params(module, features, mask)
    out, state = module.apply(params, features, mask, mutable=["intermediates"])
    logits = head_logits(params["params"], features)
    mask = mask.T  # as the stacked logits and the sown weights: [M, B]
    expected = (logits * mask[..., None]).sum(0) / mask.sum(0)[:, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    (weights,) = state["intermediates"]["weights"]
    np.testing.assert_allclose(weights, mask / mask.sum(0), rtol=1e-6)


def test_learned_weighting_renormalises_softmax_over_present(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = LateFusion(num_classes=4, weighting="learned")
    params = fusion_inputs.random_params(module, features, mask)
    modality_logits = np.array([0.5, -1.0, 2.0])
    params["params"]["modality_logits"] = jnp.asarray(modality_logits, jnp.float32)
    out, state = module.apply(params, features, mask, mutable=["intermediates"])
    mask = mask.T  # as the stacked logits and the sown weights: [M, B]
    weights = np.exp(modality_logits)[:, None] * mask
    weights = weights / weights.sum(0)
    expected = np.einsum("mb,mbc->bc", weights, head_logits(params["params"], features))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    (sown,) = state["intermediates"]["weights"]
    np.testing.assert_allclose(sown, weights, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(sown)[~mask], 0.0)


def test_unknown_weighting(fusion_inputs):
    module = LateFusion(num_classes=2, weighting="max")
    with pytest.raises(
        ValueError, match=r"weighting must be one of \('mean', 'learned'\); got 'max'"
    ):
        module.init(jax.random.PRNGKey(0), fusion_inputs.features(), fusion_inputs.MASK)
