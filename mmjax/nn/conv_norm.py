"""Convolution, batch-stat norm and ReLU as one op whose backward never forms ``d(conv)``.

For Conv-4's first block the input is the images, whose gradient MAML never needs. With
``z = P W`` (``P``: the im2col patches, ``[N, K]`` with ``K = 9`` for one input channel),
the whole backward pass reduces to ``K x C`` quantities:

- with ``g`` the output gradient through the ReLU mask, ``A = P^T g`` (one ``[K, N] x [N, C]``
  matmul), ``s = sum(g)``, the mean patch ``p`` and the ``[K, K]`` covariance ``G`` of the
  patches give the scale, bias and kernel gradients in closed form:
  ``A_c = A - p s^T``, ``d_scale = rstd * sum_k(A_c * W)``, ``d_bias = s`` and
  ``d_W = scale * rstd * (A_c - (G W) * rstd * d_scale)``.

Autodiff of the unfused layers instead writes ``x_hat``, ``d(conv)`` and two reductions
over the ``[N, C]`` activations (the largest of the network): four passes that this op does
not make. The input's cotangent is still returned (so the op is a correct VJP for any use);
when nothing consumes it, as for images, XLA removes its computation. The backward is plain
``jax.numpy``, so second-order MAML differentiates through it.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from mmjax.nn.norm import batch_norm_forward


def _forward(columns, kernel, scale, bias, epsilon):
    count = columns.shape[1]
    mean_patch = jnp.mean(columns, axis=1)  # [K]
    centred = columns - mean_patch[:, None]
    covariance = (centred @ centred.T) / count  # [K, K], for the backward pass
    z = jnp.einsum("kn,kc->nc", columns, kernel)  # [N, C]
    # The statistics of z itself (not p W and diag(W^T G W), equal in exact arithmetic):
    # the closed-form backward assumes x_hat is exactly centred and normalised, and the
    # Gram form of the variance, under XLA's fusion, gave 1e-2 relative gradient errors
    # in float32 (measured against autodiff of the unfused layers).
    y, (mean, rstd) = batch_norm_forward(z, scale, bias, epsilon, True)
    return y, (columns, kernel, scale, mean_patch, covariance, mean, rstd, y)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def conv_batch_norm_relu(
    columns: chex.Array,
    kernel: chex.Array,
    scale: chex.Array,
    bias: chex.Array,
    epsilon: float = 1e-3,
) -> chex.Array:
    """``relu(batch_norm(columns^T @ kernel))`` with batch statistics over all ``N`` rows.

    Args:
      columns: ``[K, N]`` transposed im2col patches (see ``mmjax.nn.conv.im2col_columns``).
      kernel: ``[K, C]`` (a ``[k, k, C_in, C]`` kernel reshaped).
      scale, bias: ``[C]`` batch-norm parameters.
      epsilon: added to the variance.

    Returns:
      ``[N, C]``, equal (up to rounding) to ``batch_norm(columns.T @ kernel, scale, bias,
      epsilon, relu=True)``.
    """
    return _forward(columns, kernel, scale, bias, epsilon)[0]


def _bwd(epsilon, residuals, grad):
    del epsilon
    columns, kernel, scale, mean_patch, covariance, mean, rstd, y = residuals
    count = columns.shape[1]
    g = jnp.where(y > 0, grad, 0)  # [N, C]
    sum_g = jnp.sum(g, axis=0)  # [C]
    centred_a = columns @ g - mean_patch[:, None] * sum_g  # (P - p)^T g, [K, C]
    grad_scale = rstd * jnp.sum(centred_a * kernel, axis=0)  # sum(g * x_hat)
    grad_kernel = (scale * rstd) * (centred_a - (covariance @ kernel) * (rstd * grad_scale))
    # The input's cotangent; dead code (removed by XLA) when the input is data.
    x_hat = (jnp.einsum("kn,kc->nc", columns, kernel) - mean) * rstd
    grad_z = (scale * rstd / count) * (count * g - sum_g - x_hat * grad_scale)
    grad_columns = jnp.einsum("kc,nc->kn", kernel, grad_z)
    return grad_columns, grad_kernel, grad_scale, sum_g


conv_batch_norm_relu.defvjp(_forward, _bwd)
