"""Tests for TensorFusion and LowRankTensorFusion against their explicit definitions."""

import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.fusion import LowRankTensorFusion, TensorFusion


def with_one(features, mask):
    """``[h_m; 1]`` with masked modalities (``mask: [B, M]``) as ``[0, ..., 0, 1]``, in float64."""
    mask = np.asarray(mask).T  # the oracle stacks modalities first: [M, B]
    return [
        np.concatenate(
            [np.where(mask[m][:, None], np.asarray(x, np.float64), 0), np.ones((x.shape[0], 1))],
            axis=-1,
        )
        for m, x in enumerate(features)
    ]


def test_tensor_fusion_is_dense_of_explicit_outer_product(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = TensorFusion(features_out=4)
    params = fusion_inputs.random_params(module, features, mask)
    out = module.apply(params, fusion_inputs.corrupt_masked(features, mask, 2, "nonfinite"), mask)
    z0, z1, z2 = with_one(features, mask)
    outer = np.einsum("bi,bj,bk->bijk", z0, z1, z2).reshape(5, -1)  # 4 * 6 * 3 = 72
    dense = params["params"]["project"]
    assert dense["kernel"].shape == (72, 4)
    np.testing.assert_allclose(out, outer @ dense["kernel"] + dense["bias"], rtol=1e-5, atol=1e-5)
    # The masked modality keeps the appended 1: sample 0 (modality 2 masked) only sees the
    # slice [:, :, -1] of the outer product.
    np.testing.assert_array_equal(outer.reshape(5, 4, 6, 3)[0, :, :, :-1], 0.0)


def test_tensor_fusion_refuses_huge_products():
    module = TensorFusion(features_out=2, max_tensor_size=100)
    features = [jnp.zeros((1, 9)), jnp.zeros((1, 10))]
    with pytest.raises(ValueError, match=r"outer product of size 110 > max_tensor_size=100"):
        module.apply({}, features, np.ones((1, 2), bool))


def test_low_rank_fusion_is_sum_over_rank_of_products(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = LowRankTensorFusion(features_out=4, rank=3)
    params = fusion_inputs.random_params(module, features, mask)
    out = module.apply(params, fusion_inputs.corrupt_masked(features, mask, 2, "random"), mask)
    expected = np.zeros((5, 4))
    for r in range(3):
        term = np.ones((5, 4))
        for m, z in enumerate(with_one(features, mask)):
            term = term * (z @ np.asarray(params["params"][f"factor_{m}"][r], np.float64))
        expected += term
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_low_rank_with_full_rank_reproduces_tensor_fusion(fusion_inputs):
    """Two modalities: a per-output SVD of the TensorFusion weights gives exact factors."""
    dims, mask = (3, 2), fusion_inputs.MASK[:, :2]
    features = fusion_inputs.features(4, dims)
    tensor = TensorFusion(features_out=4)
    tensor_params = fusion_inputs.random_params(tensor, features, mask)
    kernel = np.asarray(tensor_params["params"]["project"]["kernel"], np.float64)
    weights = kernel.reshape(4, 3, 4).copy()  # [D_0 + 1, D_1 + 1, out]
    weights[-1, -1] += tensor_params["params"]["project"]["bias"]  # the bias sits on 1 x 1
    rank = 3  # = min(D_0 + 1, D_1 + 1)
    factor_0, factor_1 = np.zeros((rank, 4, 4)), np.zeros((rank, 3, 4))
    for o in range(4):
        u, s, vt = np.linalg.svd(weights[:, :, o], full_matrices=False)
        factor_0[:, :, o] = (u * s).T
        factor_1[:, :, o] = vt
    low_rank = LowRankTensorFusion(features_out=4, rank=rank)
    low_rank_params = {
        "params": {
            "factor_0": jnp.asarray(factor_0, jnp.float32),
            "factor_1": jnp.asarray(factor_1, jnp.float32),
        }
    }
    np.testing.assert_allclose(
        low_rank.apply(low_rank_params, features, mask),
        tensor.apply(tensor_params, features, mask),
        rtol=1e-5,
        atol=1e-5,
    )


def test_low_rank_rank_must_be_positive(fusion_inputs):
    with pytest.raises(ValueError, match="rank must be >= 1; got 0"):
        LowRankTensorFusion(features_out=2, rank=0).apply(
            {}, fusion_inputs.features(), fusion_inputs.MASK
        )
