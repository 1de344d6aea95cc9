"""Tests for ConcatFusion against an explicit numpy concatenation."""

import chex
import jax
import numpy as np

from mmjax.fusion import ConcatFusion


def numpy_concat(features, mask):
    mask = np.asarray(mask, bool).T  # the oracle stacks modalities first: [M, B]
    parts = [
        np.where(mask[m][:, None], np.asarray(x, np.float64), 0) for m, x in enumerate(features)
    ]
    return np.concatenate(parts + [mask.T.astype(np.float64)], axis=-1)


def test_without_projection_is_masked_concatenation_plus_indicators(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = ConcatFusion()
    params = fusion_inputs.random_params(module, features, mask)
    assert not jax.tree.leaves(params)
    out = module.apply(params, fusion_inputs.corrupt_masked(features, mask, 3, "nonfinite"), mask)
    chex.assert_shape(out, (5, 3 + 5 + 2 + 3))
    np.testing.assert_array_equal(out, numpy_concat(features, mask))


def test_projection_is_dense_of_concatenation(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = ConcatFusion(features_out=4)
    params = fusion_inputs.random_params(module, features, mask)
    dense = params["params"]["project"]
    expected = numpy_concat(features, mask) @ dense["kernel"] + dense["bias"]
    np.testing.assert_allclose(module.apply(params, features, mask), expected, rtol=1e-5, atol=1e-5)
