"""The fused first block (im2col conv + batch-stat norm + ReLU) against autodiff of the parts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.nn import Classifier, Conv4, conv
from mmjax.nn.conv_norm import conv_batch_norm_relu
from tests.precision import float64, to_float64


def _reference(columns, kernel, scale, bias, epsilon=1e-3):
    """The unfused layer: matmul, plain batch-norm formula, ReLU, all by autodiff."""
    z = columns.T @ kernel
    mean = jnp.mean(z, axis=0)
    var = jnp.mean(jnp.square(z - mean), axis=0)
    return jax.nn.relu((z - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias)


def _inputs(dtype, batch=4, size=8, features=5):
    keys = jax.random.split(jax.random.key(3), 4)
    images = jax.random.uniform(keys[0], (batch, size, size, 1), dtype)
    columns, _ = conv.im2col_columns(images, 3, stride=2)
    kernel = 0.5 * jax.random.normal(keys[1], (9, features), dtype)
    scale = 1.0 + 0.3 * jax.random.normal(keys[2], (features,), dtype)
    bias = 0.2 * jax.random.normal(keys[3], (features,), dtype)
    return columns, kernel, scale, bias


def test_shapes_and_relu():
    columns, kernel, scale, bias = _inputs(jnp.float32)
    out = conv_batch_norm_relu(columns, kernel, scale, bias)
    chex.assert_shape(out, (columns.shape[1], kernel.shape[1]))
    assert float(jnp.min(out)) == 0.0 and float(jnp.max(out)) > 0.0


def test_equals_autodiff_to_second_order_in_float64():
    """Value, gradient (all four inputs) and a Hessian-vector product equal autodiff's."""
    with jax.enable_x64(True):
        args = _inputs(jnp.float64)
        n, c = args[0].shape[1], args[1].shape[1]
        weights = jax.random.normal(jax.random.key(5), (n, c), jnp.float64)
        directions = [
            jax.random.normal(jax.random.key(6 + i), a.shape, jnp.float64)
            for i, a in enumerate(args)
        ]

        def make(layer):
            loss = lambda *a: jnp.sum(jnp.sin(layer(*a)) * weights)
            grad = jax.grad(loss, argnums=(0, 1, 2, 3))
            hvp = jax.grad(
                lambda *a: sum(jnp.vdot(g, d) for g, d in zip(grad(*a), directions)),
                argnums=(0, 1, 2, 3),
            )
            return layer(*args), grad(*args), hvp(*args)

        fused, reference = make(conv_batch_norm_relu), make(_reference)
        chex.assert_trees_all_close(fused, reference, rtol=1e-9, atol=1e-11)
        # A cannot-fail guard: the gradient is not trivially zero.
        assert float(jnp.max(jnp.abs(fused[1][1]))) > 1e-3


def test_vmap_equals_a_loop_over_tasks():
    """Per-task kernels under vmap (as MAML maps tasks) equal one call per task.

    An exactness claim, so float64: in float32 the batched and unbatched matmuls may sum in
    different orders on different CPUs (a 2e-6 difference in a 2e-3 entry was seen).
    """
    with float64():
        columns, kernel, scale, bias = _inputs(jnp.float64)
        kernels = kernel + 0.1 * jax.random.normal(jax.random.key(9), (3,) + kernel.shape)
        loss = lambda k: jnp.sum(jnp.tanh(conv_batch_norm_relu(columns, k, scale, bias)))
        mapped = jax.vmap(jax.value_and_grad(loss))(kernels)
        looped = [jax.value_and_grad(loss)(k) for k in kernels]
        assert mapped[1].dtype == jnp.float64
        chex.assert_trees_all_close(
            mapped, jax.tree.map(lambda *x: jnp.stack(x), *looped), rtol=1e-12, atol=1e-14
        )
        # The three tasks really differ (the check is not one task compared thrice).
        assert float(jnp.max(jnp.abs(mapped[0] - mapped[0][0]))) > 1e-3


@pytest.mark.parametrize("jit", [False, True])
def test_conv4_fused_first_block_equals_unfused(jit):
    """Same parameters, same function; in float32 (jitted, as in training) no less accurate.

    Both float32 evaluations are compared with the float64 value of the same function: the
    fused block's rounding error may not exceed the unfused layers' own by more than 4x (plus
    a few units in the last place of the largest entry). An unstable formula fails by orders
    of magnitude (computing the variance from the patch covariance gave 1e-2 relative errors);
    reordered sums do not. The bound compares two errors measured on the same CPU, so it holds
    on any CPU, where a fixed float32 tolerance does not.
    """
    x = jax.random.uniform(jax.random.key(0), (10, 28, 28, 1))
    labels = jnp.repeat(jnp.arange(5), 2)

    def value_and_grads(fuse, params, x, jit):
        model = Classifier(Conv4(features=16, conv_impl="im2col", fuse_first_block=fuse), 5)
        if params is None:
            return model.init(jax.random.key(1), x)
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
            model.apply(p, x), labels
        ).mean()
        fn = jax.value_and_grad(loss)
        return (jax.jit(fn) if jit else fn)(params)

    params = value_and_grads(True, None, x, jit)
    chex.assert_trees_all_equal(params, value_and_grads(False, None, x, jit))  # same tree, init
    fused = value_and_grads(True, params, x, jit)
    plain = value_and_grads(False, params, x, jit)
    with float64():
        exact = value_and_grads(False, to_float64(params), to_float64(x), True)
    ulp = 2.0**-23
    pairs = zip(jax.tree.leaves(fused), jax.tree.leaves(plain), jax.tree.leaves(exact))
    for got, reference, truth in pairs:
        assert got.dtype == jnp.float32 and truth.dtype == jnp.float64
        truth = np.asarray(truth)
        fused_error = np.max(np.abs(np.asarray(got, np.float64) - truth))
        plain_error = np.max(np.abs(np.asarray(reference, np.float64) - truth))
        floor = 8 * ulp * np.max(np.abs(truth))
        assert fused_error <= 4 * plain_error + floor, (fused_error, plain_error, floor)


def test_batch_stat_norm_conv_kernel_needs_relu():
    columns, kernel, _, _ = _inputs(jnp.float32)
    with pytest.raises(ValueError, match="relu=True"):
        conv.BatchStatNorm().init(jax.random.key(0), columns, conv_kernel=kernel)


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_fused_equals_unfused_in_float64(first_order):
    """Second- and first-order MAML meta-gradients through the fused block equal the unfused."""
    from mmjax.meta import maml

    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(11), 3)
        episodes = maml.Episode(
            jax.random.uniform(keys[0], (2, 5, 14, 14, 1), jnp.float64),
            jnp.tile(jnp.arange(5), (2, 1)),
            jax.random.uniform(keys[1], (2, 10, 14, 14, 1), jnp.float64),
            jnp.tile(jnp.repeat(jnp.arange(5), 2), (2, 1)),
        )
        grads = []
        for fuse in (True, False):
            model = Classifier(Conv4(features=8, conv_impl="im2col", fuse_first_block=fuse), 5)
            params = model.init(keys[2], episodes.support_inputs[0])
            loss_fn = maml.classification_loss(model.apply)
            meta = lambda p, loss_fn=loss_fn: maml.meta_loss(
                p, episodes, loss_fn=loss_fn, inner_lr=0.4, num_steps=2, first_order=first_order
            )[0]
            grads.append(jax.jit(jax.grad(meta))(params))
        chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-8, atol=1e-12)
