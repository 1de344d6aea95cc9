"""Conv-4: the im2col convolution equals lax.conv, also vmapped over per-task kernels."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn import conv
from tests.precision import assert_within_sum_bound, float64, to_float64


def _abs_terms(x, kernel, stride):
    """Per output: the sum of |x| * |kernel| over its 3x3xC window, in float64."""
    with float64():
        return conv.conv2d_lax(to_float64(jnp.abs(x)), to_float64(jnp.abs(kernel)), stride=stride)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [28, 7, 4, 2])
def test_im2col_equals_lax_conv(stride, size):
    kx, kk = jax.random.split(jax.random.key(size * 10 + stride))
    x = jax.random.normal(kx, (3, size, size, 5))
    kernel = jax.random.normal(kk, (3, 3, 5, 7))
    # Both are float32 sums of the same 45 products per output, in different orders.
    assert_within_sum_bound(
        conv.conv2d_im2col(x, kernel, stride=stride),
        conv.conv2d_lax(x, kernel, stride=stride),
        _abs_terms(x, kernel, stride),
        n=3 * 3 * 5,
    )


def test_im2col_equals_lax_conv_under_vmap_with_per_task_kernels():
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (4, 6, 14, 14, 3))
    kernels = jax.random.normal(kk, (4, 3, 3, 3, 8))
    a = jax.vmap(lambda xi, ki: conv.conv2d_im2col(xi, ki, stride=2))(x, kernels)
    b = jax.vmap(lambda xi, ki: conv.conv2d_lax(xi, ki, stride=2))(x, kernels)
    chex.assert_shape(a, (4, 6, 7, 7, 8))
    abs_terms = jax.vmap(lambda xi, ki: _abs_terms(xi, ki, 2))(x, kernels)
    assert_within_sum_bound(a, b, abs_terms, n=3 * 3 * 3)


@pytest.mark.parametrize("pool, features", [("stride", 16), ("max", 8)])
def test_conv4_shapes_and_formulations_agree(pool, features):
    """The same function (an exactness claim, so compared in float64)."""
    x = jax.random.uniform(jax.random.key(1), (10, 28, 28, 1))
    model_a = conv.Conv4(features=features, pool=pool, conv_impl="im2col")
    model_b = conv.Conv4(features=features, pool=pool, conv_impl="lax")
    params = model_a.init(jax.random.key(2), x)
    chex.assert_shape(model_a.apply(params, x), (10, features))
    with float64():
        params64, x64 = to_float64(params), to_float64(x)
        out = model_a.apply(params64, x64)
        assert out.dtype == jnp.float64
        chex.assert_trees_all_close(out, model_b.apply(params64, x64), atol=1e-12, rtol=1e-10)
    assert set(params["params"]) == {
        f"{n}_{i}" for n in ("Conv2D", "BatchStatNorm") for i in range(4)
    }


def test_batch_stat_norm_uses_batch_statistics():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(3), (16, 5, 5, 4))
    norm = conv.BatchStatNorm()
    y = norm.apply(norm.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(np.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.std(y, axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_bad_input_errors():
    with pytest.raises(
        ValueError, match=r"x must be \[batch, height, width, channels\]; got shape \(28, 28\)"
    ):
        conv.Conv4().init(jax.random.key(0), jnp.zeros((28, 28)))
    with pytest.raises(ValueError, match="conv_impl='fft' is not one of"):
        conv.resolve_conv_impl("fft")
    with pytest.raises(ValueError, match="pool='avg'"):
        conv.Conv4(pool="avg").init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_auto_is_im2col_on_cpu():
    assert conv.resolve_conv_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "lax")


@pytest.mark.parametrize("conv_impl", conv.CONV_IMPLS)
def test_every_impl_equals_lax_conv_in_value_and_gradient_under_vmap(conv_impl):
    """Each formulation (and the one "auto" picks) matches lax.conv, forward and backward.

    An exactness claim, so float64 (the float32 forward sums are bounded above).
    """
    with float64():
        kx, kk = jax.random.split(jax.random.key(4))
        x = jax.random.normal(kx, (3, 5, 14, 14, 4), jnp.float64)
        kernels = jax.random.normal(kk, (3, 3, 3, 4, 6), jnp.float64)
        impl = conv.resolve_conv_impl(conv_impl)
        fn = conv.conv2d_im2col if impl == "im2col" else conv.conv2d_lax

        def loss(f, x, k):
            return jnp.sum(jnp.sin(jax.vmap(lambda xi, ki: f(xi, ki, stride=2))(x, k)))

        value, grads = jax.value_and_grad(functools.partial(loss, fn), argnums=(0, 1))(x, kernels)
        ref_value, ref_grads = jax.value_and_grad(
            functools.partial(loss, conv.conv2d_lax), argnums=(0, 1)
        )(x, kernels)
        assert grads[1].dtype == jnp.float64
        chex.assert_trees_all_close(value, ref_value, atol=1e-10, rtol=1e-12)
        chex.assert_trees_all_close(grads, ref_grads, atol=1e-10, rtol=1e-10)


def _reference_batch_norm(x, scale, bias, epsilon=1e-3, relu=False):
    """The plain formula, differentiated by autodiff: the oracle for the custom VJP."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    y = (x - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias
    return jax.nn.relu(y) if relu else y


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_custom_vjp_equals_autodiff_to_second_order(relu):
    """First and second derivatives (as second-order MAML takes them) equal autodiff's."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(7), 5)
        x = 0.5 + 2.0 * jax.random.normal(keys[0], (3, 4, 4, 5), jnp.float64)
        scale = 1.0 + 0.3 * jax.random.normal(keys[1], (5,), jnp.float64)
        bias = 0.2 * jax.random.normal(keys[2], (5,), jnp.float64)
        weights = jax.random.normal(keys[3], (3, 4, 4, 5), jnp.float64)
        direction = jax.random.normal(keys[4], (3, 4, 4, 5), jnp.float64)

        def make(norm):
            loss = lambda x, s, b: jnp.sum(jnp.sin(norm(x, s, b, 1e-3, relu)) * weights)
            grad = jax.grad(loss, argnums=(0, 1, 2))
            # A scalar of the gradient, differentiated again: a Hessian-vector product.
            hvp = jax.grad(
                lambda x, s, b: sum(
                    jnp.vdot(g, d) for g, d in zip(grad(x, s, b), (direction, scale, bias))
                ),
                argnums=(0, 1, 2),
            )
            return norm(x, scale, bias, 1e-3, relu), grad(x, scale, bias), hvp(x, scale, bias)

        chex.assert_trees_all_close(
            make(conv.batch_norm), make(_reference_batch_norm), rtol=1e-9, atol=1e-10
        )


def _reference_conv4(params, x):
    """Conv-4 written out with the conv bias added, as learn2learn's ``OmniglotCNN`` does."""
    p = params["params"]
    for i in range(4):
        c, n = p[f"Conv2D_{i}"], p[f"BatchStatNorm_{i}"]
        x = conv.conv2d_lax(x, c["kernel"], stride=2) + c["bias"]
        x = _reference_batch_norm(x, n["scale"], n["bias"], relu=True)
    return jnp.mean(x, axis=(1, 2))


def test_conv4_skips_the_bias_that_batch_norm_cancels():
    """Conv4 does not add its conv biases; the function and the other gradients are the same."""
    with jax.enable_x64(True):
        x = jax.random.uniform(jax.random.key(4), (6, 28, 28, 1), jnp.float64)
        model = conv.Conv4(features=8, conv_impl="im2col")
        params = model.init(jax.random.key(5), x)
        # Large, distinct conv biases: a reference that adds them must still agree.
        layers = dict(params["params"])
        for i in range(4):
            bias = 3.0 * jax.random.normal(jax.random.key(10 + i), (8,), jnp.float64)
            layers[f"Conv2D_{i}"] = dict(layers[f"Conv2D_{i}"], bias=bias)
        params = {"params": layers}
        weights = jax.random.normal(jax.random.key(6), (6, 8), jnp.float64)
        loss = lambda f: lambda p: jnp.sum(jnp.tanh(f(p, x)) * weights)
        value, grads = jax.value_and_grad(loss(model.apply))(params)
        ref_value, ref_grads = jax.value_and_grad(loss(_reference_conv4))(params)
        np.testing.assert_allclose(value, ref_value, rtol=1e-10)
        for i in range(4):
            conv_grads = grads["params"][f"Conv2D_{i}"]
            np.testing.assert_array_equal(conv_grads["bias"], 0.0)
            # The reference's bias gradient is zero up to rounding: the bias is cancelled.
            assert float(jnp.max(jnp.abs(ref_grads["params"][f"Conv2D_{i}"]["bias"]))) < 1e-9
            chex.assert_trees_all_close(
                conv_grads["kernel"], ref_grads["params"][f"Conv2D_{i}"]["kernel"], rtol=1e-8
            )
            chex.assert_trees_all_close(
                grads["params"][f"BatchStatNorm_{i}"],
                ref_grads["params"][f"BatchStatNorm_{i}"],
                rtol=1e-8,
                atol=1e-12,
            )


def test_conv2d_add_bias():
    with float64():
        x = jax.random.normal(jax.random.key(8), (2, 5, 5, 3), jnp.float64)
        with_bias = conv.Conv2D(4, conv_impl="im2col")
        params = to_float64(with_bias.init(jax.random.key(9), x))
        params = {"params": dict(params["params"], bias=jnp.arange(4.0))}
        without = conv.Conv2D(4, conv_impl="im2col", add_bias=False)
        chex.assert_trees_all_close(
            with_bias.apply(params, x),
            without.apply(params, x) + jnp.arange(4.0),
            atol=1e-12,
            rtol=1e-12,
        )


@pytest.mark.parametrize("depth", [9, 72])  # both backward forms (plain and barrier)
def test_patch_matmul_equals_autodiff_to_second_order(depth):
    """patch_matmul's custom VJP (and its derivative) equal autodiff of ``patches @ kernel``."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(12), 5)
        patches = jax.random.normal(keys[0], (40, depth), jnp.float64)
        kernel = jax.random.normal(keys[1], (depth, 6), jnp.float64)
        weights = jax.random.normal(keys[2], (40, 6), jnp.float64)
        directions = (
            jax.random.normal(keys[3], patches.shape, jnp.float64),
            jax.random.normal(keys[4], kernel.shape, jnp.float64),
        )

        def make(matmul):
            loss = lambda p, k: jnp.sum(jnp.sin(matmul(p, k)) * weights)
            grad = jax.grad(loss, argnums=(0, 1))
            hvp = jax.grad(
                lambda p, k: sum(jnp.vdot(g, d) for g, d in zip(grad(p, k), directions)),
                argnums=(0, 1),
            )
            return grad(patches, kernel), hvp(patches, kernel)

        got, want = make(conv.patch_matmul), make(jnp.matmul)
        chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)
        # Under vmap (per-task kernels) too.
        kernels = jnp.stack([kernel, 2 * kernel])
        mapped = jax.vmap(jax.grad(lambda k: jnp.sum(jnp.sin(conv.patch_matmul(patches, k)))))(
            kernels
        )
        looped = [jax.grad(lambda k: jnp.sum(jnp.sin(patches @ k)))(k) for k in kernels]
        chex.assert_trees_all_close(mapped, jnp.stack(looped), rtol=1e-10)
