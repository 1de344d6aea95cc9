"""The fused first block (im2col conv + batch-stat norm + ReLU) against autodiff of the parts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.nn import Classifier, Conv4, conv
from mmjax.nn.conv_norm import conv_batch_norm_relu


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
    """Per-task kernels under vmap (as MAML maps tasks) equal one call per task."""
    columns, kernel, scale, bias = _inputs(jnp.float32)
    kernels = kernel + 0.1 * jax.random.normal(jax.random.key(9), (3,) + kernel.shape)
    loss = lambda k: jnp.sum(jnp.tanh(conv_batch_norm_relu(columns, k, scale, bias)))
    mapped = jax.vmap(jax.value_and_grad(loss))(kernels)
    looped = [jax.value_and_grad(loss)(k) for k in kernels]
    chex.assert_trees_all_close(
        mapped, jax.tree.map(lambda *x: jnp.stack(x), *looped), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("jit", [False, True])
def test_conv4_fused_first_block_equals_unfused(jit):
    """Same parameters, same function, same gradients (float32, jitted as in training)."""
    x = jax.random.uniform(jax.random.key(0), (10, 28, 28, 1))
    labels = jnp.repeat(jnp.arange(5), 2)
    results = []
    for fuse in (True, False):
        model = Classifier(Conv4(features=16, conv_impl="im2col", fuse_first_block=fuse), 5)
        params = model.init(jax.random.key(1), x)
        loss = lambda p, x, model=model: optax.softmax_cross_entropy_with_integer_labels(
            model.apply(p, x), labels
        ).mean()
        fn = jax.value_and_grad(loss, argnums=(0, 1))
        results.append((params, (jax.jit(fn) if jit else fn)(params, x)))
    (fused_params, fused), (plain_params, plain) = results
    chex.assert_trees_all_equal(fused_params, plain_params)  # the tree and init are unchanged
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-6)
    for got, want in zip(jax.tree.leaves(fused[1]), jax.tree.leaves(plain[1])):
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale + 1e-12)


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
