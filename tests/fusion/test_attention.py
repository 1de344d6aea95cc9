"""Tests for AttentionFusion and CrossModalAttention against hand-written numpy versions."""

import chex
import numpy as np
import pytest

from mmjax.fusion import AttentionFusion, CrossModalAttention


def dense(params, x):
    return np.asarray(x, np.float64) @ params["kernel"] + params["bias"]


def numpy_softmax(scores, mask, axis):
    """Softmax over ``axis`` among the entries where ``mask`` is set (others 0)."""
    scores = np.where(mask, scores, -np.inf)
    shift = np.max(scores, axis=axis, keepdims=True)
    exp = np.where(mask, np.exp(scores - np.where(np.isfinite(shift), shift, 0)), 0)
    total = exp.sum(axis=axis, keepdims=True)
    return exp / np.where(total > 0, total, 1)


def numpy_attention_fusion(params, features, mask):
    mask = np.asarray(mask).T  # the oracle stacks modalities first: [M, B]
    masked = [np.where(mask[m][:, None], x, 0) for m, x in enumerate(features)]
    h = np.stack([dense(params[f"project_{m}"], x) for m, x in enumerate(masked)])  # [M, B, d]
    a = numpy_softmax(
        dense(params["score"], h), mask[..., None], axis=0
    )  # a_i = softmax(W h_i + b)
    return (a * h).sum(0), a


@pytest.mark.parametrize("scalar", [False, True])
def test_attention_fusion_equals_formula_and_weights_are_masked_softmax(fusion_inputs, scalar):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = AttentionFusion(features_out=4, scalar=scalar)
    params = fusion_inputs.random_params(module, features, mask)
    out, state = module.apply(
        params,
        fusion_inputs.corrupt_masked(features, mask, 2, "nonfinite"),
        mask,
        mutable=["intermediates"],
    )
    expected, expected_weights = numpy_attention_fusion(params["params"], features, mask)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    (weights,) = state["intermediates"]["weights"]
    weights = np.asarray(weights)
    chex.assert_shape(weights, (3, 5) if scalar else (3, 5, 4))
    np.testing.assert_allclose(
        weights, expected_weights[..., 0] if scalar else expected_weights, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(weights[~mask.T], 0.0)  # exactly 0 for masked modalities
    np.testing.assert_allclose(weights.sum(0), 1.0, rtol=1e-6)  # present ones sum to 1


def numpy_cross_modal(params, features, mask, num_heads):
    mask = np.asarray(mask).T  # the oracle stacks modalities first: [M, B]
    masked = [np.where(mask[m][:, None], x, 0) for m, x in enumerate(features)]
    tokens = np.stack([dense(params[f"project_{m}"], x) for m, x in enumerate(masked)], axis=1)
    heads = {
        name: np.einsum("bmd,dhc->bmhc", tokens, params[name]["kernel"]) + params[name]["bias"]
        for name in ("query", "key", "value")
    }
    head_dim = heads["query"].shape[-1]
    scores = np.einsum("bqhc,bkhc->bhqk", heads["query"], heads["key"]) / np.sqrt(head_dim)
    num_modalities = len(features)
    key_mask = mask.T[:, None, None, :] & ~np.eye(num_modalities, dtype=bool)
    weights = numpy_softmax(scores, key_mask, axis=-1)
    attended = np.einsum("bhqk,bkhc->bqhc", weights, heads["value"])
    tokens = tokens + np.einsum("bqhc,hcd->bqd", attended, params["out"]["kernel"])
    tokens = tokens + params["out"]["bias"]
    present = mask.T[..., None]
    return (tokens * present).sum(1) / present.sum(1), weights


def test_cross_modal_attention_matches_numpy(fusion_inputs):
    features, mask = fusion_inputs.features(), fusion_inputs.MASK
    module = CrossModalAttention(num_heads=2, features_out=4)
    params = fusion_inputs.random_params(module, features, mask)
    out, state = module.apply(params, features, mask, mutable=["intermediates"])
    expected, expected_weights = numpy_cross_modal(params["params"], features, mask, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    (weights,) = state["intermediates"]["weights"]
    weights = np.asarray(weights)
    chex.assert_shape(weights, (5, 2, 3, 3))
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-5, atol=1e-6)
    # No attention to itself nor to masked modalities; rows with another present key sum to 1.
    np.testing.assert_array_equal(weights[:, :, np.arange(3), np.arange(3)], 0.0)
    np.testing.assert_array_equal(np.moveaxis(weights, -1, 0)[~mask.T], 0.0)
    others_present = (mask.sum(1)[:, None] - mask) > 0  # [batch, query]
    sums = weights.sum(-1)  # [batch, heads, query]
    np.testing.assert_allclose(sums.transpose(0, 2, 1)[others_present], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(sums.transpose(0, 2, 1)[~others_present], 0.0)


def test_cross_modal_attention_heads_must_divide_width(fusion_inputs):
    module = CrossModalAttention(num_heads=3, features_out=4)
    with pytest.raises(ValueError, match="num_heads=3 must be positive and divide features_out=4"):
        module.apply({}, fusion_inputs.features(), fusion_inputs.MASK)
