"""2x2 max-pool as an elementwise maximum of four strided slices.

``flax.linen.max_pool`` lowers to ``reduce_window``, whose gradient is
``select_and_scatter_add``; XLA:CPU runs both as unfused loops, and MAML's second order
differentiates the scatter once more. The four-slice maximum below is the same function
(``VALID`` padding: an odd last row or column is dropped) built from ``maximum`` and
strided slices, which XLA fuses with the neighbouring elementwise ops, forward and backward.
Gradients: where a window's maximum is unique (almost surely, for real-valued inputs) they
equal ``max_pool``'s; on an exact tie ``jnp.maximum`` splits the cotangent between the tied
inputs where ``select_and_scatter_add`` gives it all to the first (after a ReLU, ties are
exact zeros, whose ReLU gradient is 0 either way).
"""

from __future__ import annotations

import chex
import jax.numpy as jnp


def max_pool_2x2(x: chex.Array) -> chex.Array:
    """2x2 max-pool, stride 2, ``VALID``: ``[batch, h, w, c] -> [batch, h // 2, w // 2, c]``."""
    if x.ndim != 4:
        raise ValueError(f"max_pool_2x2 input x must be [batch, h, w, c]; got shape {x.shape}")
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"max_pool_2x2 needs h and w >= 2; got shape {x.shape}")
    h, w = 2 * (x.shape[1] // 2), 2 * (x.shape[2] // 2)
    top = jnp.maximum(x[:, 0:h:2, 0:w:2], x[:, 0:h:2, 1:w:2])
    bottom = jnp.maximum(x[:, 1:h:2, 0:w:2], x[:, 1:h:2, 1:w:2])
    return jnp.maximum(top, bottom)
