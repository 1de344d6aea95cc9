"""Tests for mmjax.fusion.common: validation, check_mask, masked reductions."""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.fusion import common


def test_validate_features_returns_counts(fusion_inputs):
    assert common.validate_features(fusion_inputs.features(), fusion_inputs.MASK) == (3, 5)


@pytest.mark.parametrize(
    "features, mask, message",
    [
        (np.zeros((3, 5, 2)), np.ones((3, 5)), r"features must be a tuple or list.*\(3, 5, 2\)"),
        ([], np.ones((5, 0)), "at least one modality"),
        ([np.zeros((5, 2)), np.zeros(5)], np.ones((5, 2)), r"features\[1\] has shape \(5,\)"),
        (
            [np.zeros((5, 2)), np.zeros((4, 3))],
            np.ones((5, 2)),
            r"features\[1\] has shape \(4, 3\); expected batch size 5",
        ),
        # A modality-first [M, B] mask (M != B) is refused, naming [B, M] and the fix.
        (
            [np.zeros((5, 2))] * 2,
            np.ones((2, 5)),
            r"mask has shape \(2, 5\); expected \[B, M\] = \[batch, num_modalities\] = "
            r"\[5, 2\]\. It is modality-first \[M, B\]; pass mask\.T\.",
        ),
        (
            [np.zeros((5, 2))] * 2,
            np.ones((5, 3)),
            r"mask has shape \(5, 3\); expected \[B, M\].*\[5, 2\]\.$",  # no [M, B] hint
        ),
        (
            [np.zeros((5, 2))] * 2,
            np.ones((5, 2, 1)),
            r"mask has shape \(5, 2, 1\).*\[B, M\].*\[5, 2\]",
        ),
    ],
)
def test_validate_features_errors(features, mask, message):
    with pytest.raises(ValueError, match=message):
        common.validate_features(features, mask)


def test_check_mask_concrete():
    present = common.check_mask(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert present.dtype == jnp.bool_
    np.testing.assert_array_equal(present, [[True, False], [False, True]])
    with pytest.raises(ValueError, match=r"every modality masked: \[1\]"):
        common.check_mask(np.array([[1, 0], [0, 0], [0, 1]]))  # [B, M]: sample 1 has none
    with pytest.raises(ValueError, match="only 0/1"):
        common.check_mask(np.array([[1.0, 0.5]]))
    with pytest.raises(ValueError, match=r"mask has shape \(3,\); expected .*\[B, M\]"):
        common.check_mask(np.ones(3))


def test_check_mask_traced_does_not_raise():
    mask = np.array([[True, False], [True, False]])
    present = jax.jit(common.check_mask)(mask)
    np.testing.assert_array_equal(present, mask)
    np.testing.assert_array_equal(jax.vmap(common.check_mask)(mask[None]), mask[None])


def test_mask_features_replaces_nonfinite_and_zeroes_gradient():
    features = [jnp.array([[np.nan, 1.0], [2.0, 3.0]]), jnp.array([[4.0], [np.inf]])]
    present = jnp.array([[False, True], [True, False]])
    masked = common.mask_features(features, present)
    np.testing.assert_array_equal(masked[0], [[0.0, 0.0], [2.0, 3.0]])
    np.testing.assert_array_equal(masked[1], [[4.0], [0.0]])
    grads = jax.grad(lambda f: sum(jnp.sum(x**2) for x in common.mask_features(f, present)))(
        features
    )
    np.testing.assert_array_equal(grads[0], [[0.0, 0.0], [4.0, 6.0]])
    np.testing.assert_array_equal(grads[1], [[8.0], [0.0]])


def numpy_masked_softmax(logits, mask):
    """Oracle over axis 0, in float64, one column at a time."""
    logits = np.asarray(logits, np.float64)
    mask = np.broadcast_to(mask, logits.shape)
    out = np.zeros_like(logits)
    for index in np.ndindex(logits.shape[1:]):
        column = (slice(None),) + index
        present = mask[column]
        if present.any():
            values = np.exp(logits[column][present] - logits[column][present].max())
            out[column][present] = values / values.sum()
    return out


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    data=st.data(),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2)),
)
def test_masked_softmax_matches_oracle(data, shape):
    logits = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-30, 30, width=32)))
    mask = data.draw(hnp.arrays(np.bool_, shape))
    weights, mean = jax.jit(lambda x, m: (common.masked_softmax(x, m), common.masked_mean(x, m)))(
        logits, mask
    )
    weights = np.asarray(weights)
    np.testing.assert_allclose(weights, numpy_masked_softmax(logits, mask), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(weights[~mask], 0.0)
    sums = weights.sum(axis=0)
    np.testing.assert_allclose(sums[mask.any(axis=0)], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sums[~mask.any(axis=0)], 0.0)
    expected_mean = np.where(mask, logits, 0).sum(0) / np.maximum(mask.sum(0), 1)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-5)


def test_masked_softmax_nonfinite_masked_entries_and_gradients():
    logits = jnp.array([[1.0, np.nan, 1e4], [2.0, 0.0, np.inf], [np.nan, -np.inf, 3.0]])
    mask = jnp.array([[True, False, True], [True, False, False], [False, False, True]])
    weights = common.masked_softmax(logits, mask)
    np.testing.assert_allclose(weights[:, 0], [1 / (1 + np.e), np.e / (1 + np.e), 0.0], rtol=1e-6)
    np.testing.assert_array_equal(weights[:, 1], 0.0)  # all masked: zeros, not NaN
    np.testing.assert_array_equal(weights[:, 2], [1.0, 0.0, 0.0])  # large logits: no overflow
    cotangent = jnp.arange(9.0).reshape(3, 3)
    grad = jax.grad(lambda x: jnp.sum(common.masked_softmax(x, mask) * cotangent))(logits)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[~np.asarray(mask)], 0.0)
    grad_mean = jax.grad(lambda x: jnp.sum(common.masked_mean(x, mask)))(logits)
    np.testing.assert_array_equal(grad_mean, np.where(mask, 1.0 / np.maximum(mask.sum(0), 1), 0))


def test_zero_all_masked_and_concat_masked():
    present = jnp.array([[True, False], [False, False]])
    out = common.zero_all_masked(jnp.ones((2, 3, 4)), present)
    np.testing.assert_array_equal(out[0], 1.0)
    np.testing.assert_array_equal(out[1], 0.0)
    fused = common.concat_masked([jnp.ones((2, 1)), 2 * jnp.ones((2, 2))], present)
    np.testing.assert_array_equal(fused, [[1, 2, 2, 1, 0], [1, 2, 2, 0, 0]])
