"""Tests for mmjax.nn.sequence: the stroke encoders and the two 1-D conv formulations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from mmjax.nn import sequence
from mmjax.nn.sequence import StrokeEncoder
from tests.precision import assert_within_sum_bound, float64, to_float64

KINDS = ("conv", "gru", "transformer")
BATCH, LENGTH, FEATURES = 3, 16, 8


def strokes(seed: int = 0, batch: int = BATCH, length: int = LENGTH) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(batch, length, 3)), jnp.float32)


def random_params(module, *args, seed: int = 1):
    """Normal random parameters (numpy: avoids a PRNG compile per parameter shape on CPU)."""
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype), shapes)


class StrokeEncoderTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((kind, kind) for kind in KINDS))
    def test_output_shape(self, kind):
        module = StrokeEncoder(FEATURES, kind)
        x = strokes()
        out = self.variant(module.apply)(random_params(module, x), x)
        chex.assert_shape(out, (BATCH, FEATURES))
        chex.assert_tree_all_finite(out)

    @parameterized.named_parameters(*((kind, kind) for kind in KINDS))
    def test_padding_past_lengths_has_no_influence(self, kind):
        module = StrokeEncoder(FEATURES, kind)
        x = strokes()
        lengths = jnp.array([LENGTH, 5, 11])
        params = random_params(module, x, lengths)
        valid = jnp.arange(LENGTH)[None, :, None] < lengths[:, None, None]
        padded = jnp.where(valid, x, jnp.nan)
        apply = jax.jit(module.apply)
        out = apply(params, padded, lengths)
        chex.assert_tree_all_finite(out)
        np.testing.assert_array_equal(
            apply(params, jnp.where(valid, x, 1e3 * strokes(5)), lengths), out
        )
        # Sample 1 encodes like its 5 valid steps alone: the same function of those steps,
        # so compared in float64 (batch 3 and batch 1 may sum in different orders in float32).
        with float64():
            params64, x64 = to_float64(params), to_float64(x)
            out64 = module.apply(params64, x64, lengths)
            alone = module.apply(params64, x64[1:2, :5])
            assert alone.dtype == jnp.float64
            np.testing.assert_allclose(out64[1], alone[0], rtol=1e-10, atol=1e-12)
        if kind == "transformer":
            return  # Same input masking as the others; its gradient costs 2-3 s to compile on CPU.
        grad = jax.grad(lambda x: jnp.sum(apply(params, x, lengths)))(padded)
        np.testing.assert_array_equal(grad[1, 5:], 0.0)
        assert np.all(np.isfinite(grad)) and np.any(grad[1, :5] != 0)


@pytest.mark.parametrize("stride, length", [(1, 7), (2, 16), (2, 9)])
def test_conv1d_im2col_equals_lax(stride, length):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, length, 3)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
    out = sequence.conv1d_im2col(x, kernel, stride=stride)
    chex.assert_shape(out, (2, sequence.conv1d_output_length(length, 5, stride), 4))
    # Both are float32 sums of the same 5 x 3 products per output, in different orders.
    with float64():
        abs_terms = sequence.conv1d_lax(
            to_float64(jnp.abs(x)), to_float64(jnp.abs(kernel)), stride=stride
        )
    assert_within_sum_bound(out, sequence.conv1d_lax(x, kernel, stride=stride), abs_terms, n=5 * 3)


def test_conv_encoder_formulations_agree_under_vmap_over_tasks():
    """As in MAML: per-task weights under ``vmap``; im2col, lax and a loop are one function.

    An exactness claim, so float64.
    """
    tasks = 3
    with float64():
        x = to_float64(jnp.stack([strokes(t) for t in range(tasks)]))
        modules = {
            impl: StrokeEncoder(FEATURES, "conv", conv_impl=impl) for impl in ("im2col", "lax")
        }
        params = to_float64(random_params(modules["lax"], x[0]))
        task_params = jax.tree.map(
            lambda p: jnp.stack([p * (1 + 0.1 * t) for t in range(tasks)]), params
        )
        outs = {impl: jax.jit(jax.vmap(m.apply))(task_params, x) for impl, m in modules.items()}
        assert outs["im2col"].dtype == jnp.float64
        np.testing.assert_allclose(outs["im2col"], outs["lax"], rtol=1e-10, atol=1e-12)
        loop = [
            modules["im2col"].apply(jax.tree.map(lambda p, t=t: p[t], task_params), x[t])
            for t in range(tasks)
        ]
        np.testing.assert_allclose(outs["im2col"], np.stack(loop), rtol=1e-10, atol=1e-12)


def test_unknown_conv_impl():
    with pytest.raises(ValueError, match="conv_impl"):
        StrokeEncoder(FEATURES, "conv", conv_impl="fft").init(jax.random.PRNGKey(0), strokes())


@pytest.mark.parametrize("shape", [(BATCH, LENGTH), (BATCH, LENGTH, 2), (1, BATCH, LENGTH, 3)])
def test_bad_input_shape(shape):
    module = StrokeEncoder(FEATURES, "conv")
    expected = rf"x has shape \({', '.join(map(str, shape))},?\); expected \[batch, length, 3\]"
    with pytest.raises(ValueError, match=expected):
        module.init(jax.random.PRNGKey(0), jnp.zeros(shape))


def test_bad_arguments():
    x = strokes()
    with pytest.raises(ValueError, match=r"kind must be one of \('conv', 'gru', 'transformer'\)"):
        StrokeEncoder(FEATURES, "lstm").init(jax.random.PRNGKey(0), x)
    with pytest.raises(
        ValueError, match=r"lengths has shape \(3, 1\); expected \[batch\] = \(3,\)"
    ):
        StrokeEncoder(FEATURES, "gru").init(jax.random.PRNGKey(0), x, jnp.ones((3, 1), int))
    with pytest.raises(ValueError, match="length 16 exceeds max_length=8"):
        StrokeEncoder(FEATURES, "transformer", max_length=8).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="num_layers must be None or >= 1; got 0"):
        StrokeEncoder(FEATURES, "gru", num_layers=0).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="num_heads=3 must divide features=8"):
        StrokeEncoder(FEATURES, "transformer", num_heads=3).init(jax.random.PRNGKey(0), x)
