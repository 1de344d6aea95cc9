"""max_pool_2x2 (four strided slices) equals flax's max_pool: values, gradients, Hessian-vector products."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn.pool import max_pool_2x2
from tests.precision import float64


def _flax_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 21, 21, 4), (3, 5, 2, 1)])
def test_equals_flax_max_pool_with_gradients(shape):
    # Selecting a maximum is exact, so the values agree bit for bit in any precision; the
    # gradients are sums of the same terms in float64 (ties have probability 0 for normals).
    with float64():
        x = jax.random.normal(jax.random.key(sum(shape)), shape, jnp.float64)
        w = jax.random.normal(jax.random.key(1), _flax_pool(x).shape, jnp.float64)
        assert max_pool_2x2(x).shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
        np.testing.assert_array_equal(max_pool_2x2(x), _flax_pool(x))

        def loss(pool):  # a smooth function of the pooled map, so second order is non-zero
            return lambda x: jnp.sum(jnp.tanh(pool(x) * w) ** 2)

        np.testing.assert_allclose(
            jax.grad(loss(max_pool_2x2))(x), jax.grad(loss(_flax_pool))(x), rtol=1e-12, atol=1e-14
        )
        v = jax.random.normal(jax.random.key(2), shape, jnp.float64)
        hvp = lambda f: jax.jvp(jax.grad(f), (x,), (v,))[1]
        np.testing.assert_allclose(
            hvp(loss(max_pool_2x2)), hvp(loss(_flax_pool)), rtol=1e-10, atol=1e-12
        )
        # An odd last row/column is dropped (VALID) and receives no gradient.
        g = jax.grad(loss(max_pool_2x2))(x)
        if shape[1] % 2:
            np.testing.assert_array_equal(g[:, -1], 0.0)


def test_tie_splits_the_cotangent_and_bad_shapes_raise():
    g = jax.grad(lambda x: max_pool_2x2(x).sum())(jnp.ones((1, 2, 2, 1)))
    np.testing.assert_allclose(g.sum(), 1.0)  # the window's cotangent is conserved
    with pytest.raises(ValueError, match=r"\[batch, h, w, c\].*\(2, 2\)"):
        max_pool_2x2(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="h and w >= 2"):
        max_pool_2x2(jnp.ones((1, 1, 4, 1)))
