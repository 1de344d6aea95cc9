"""ResNet-12: shapes, im2col == lax.conv (float64, outputs and gradients), vmap/scan == loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn.resnet import ResNet12

WIDTHS = (4, 6, 8, 8)


def _random_params(model, x, seed, dtype=np.float32):
    """Random parameters of the right tree and shapes (``model.init`` compiles slowly on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    scale = lambda s: 1 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) == 4 else 0.5
    return jax.tree.map(
        lambda s: (scale(s) * rng.normal(size=s.shape) + (len(s.shape) == 1)).astype(dtype), shapes
    )


def test_shapes_and_parameters():
    model = ResNet12(widths=WIDTHS, conv_impl="im2col")
    x = jnp.ones((3, 21, 21, 3))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    assert jax.eval_shape(model.apply, params, x).shape == (3, 8)
    # 4 blocks x (3 convs + 1x1 shortcut) with a batch norm each.
    kernels = [leaf for p, leaf in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(p)]
    assert len(kernels) == 16
    assert sorted({k.shape[:2] for k in kernels}) == [(1, 1), (3, 3)]
    full = jax.eval_shape(ResNet12().init, jax.random.PRNGKey(0), jnp.ones((1, 84, 84, 3)))
    count = sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(full))
    assert 12.0e6 < count < 12.6e6  # ResNet-12 (64-160-320-640) has ~12.4M parameters
    with pytest.raises(ValueError, match="must be >= 16"):
        jax.eval_shape(model.apply, params, jnp.ones((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="widths="):
        jax.eval_shape(ResNet12(widths=(4, 0)).init, jax.random.PRNGKey(0), x)


def test_im2col_equals_lax_conv_in_float64():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 2), jnp.float64)
        im2col, lax = ResNet12(WIDTHS, conv_impl="im2col"), ResNet12(WIDTHS, conv_impl="lax")
        params = _random_params(im2col, x, 2, np.float64)
        assert jax.tree.leaves(params)[0].dtype == jnp.float64

        @jax.jit
        def outputs_and_grads(params):
            loss = lambda model: lambda p: jnp.sum(jnp.sin(model.apply(p, x)))
            return (
                im2col.apply(params, x),
                lax.apply(params, x),
                jax.grad(loss(im2col))(params),
                jax.grad(loss(lax))(params),
            )

        out_im2col, out_lax, g_im2col, g_lax = outputs_and_grads(params)
        np.testing.assert_allclose(out_im2col, out_lax, rtol=1e-10, atol=1e-12)
        assert np.abs(out_im2col).max() > 0.1  # not trivially equal
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11), g_im2col, g_lax
        )


def test_vmap_and_scan_over_per_task_weights_equal_a_loop():
    model = ResNet12(WIDTHS, conv_impl="im2col")
    tasks = 3
    x = jax.random.normal(jax.random.PRNGKey(3), (tasks, 5, 16, 16, 3))
    per_task = [_random_params(model, x[0], seed) for seed in range(tasks)]
    params = jax.tree.map(lambda *p: np.stack(p), *per_task)
    apply = jax.jit(model.apply)
    looped = np.stack(
        [apply(jax.tree.map(lambda p, t=t: p[t], params), x[t]) for t in range(tasks)]
    )

    @jax.jit
    def batched(params, x):
        _, scanned = jax.lax.scan(lambda c, px: (c, model.apply(*px)), 0, (params, x))
        return jax.vmap(model.apply)(params, x), scanned

    vmapped, scanned = batched(params, x)
    np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scanned, looped, rtol=1e-5, atol=1e-5)
    assert not np.allclose(looped[0], looped[1])  # the tasks' weights differ
