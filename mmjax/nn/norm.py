"""Batch norm with batch statistics and a closed-form backward pass (``jax.custom_vjp``)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp


def batch_norm_forward(x, scale, bias, epsilon, relu):
    """Batch-stat norm of ``x: [..., C]`` (``scale, bias: [C]``), then a ReLU when ``relu``.

    Returns ``(y, (mean, rstd))``: ``y: [..., C]`` and the ``[C]`` statistics over all but
    the last axis. Plain ``jax.numpy`` (autodiff sees the formula): shared by
    :func:`batch_norm` and :func:`mmjax.nn.conv_norm.conv_batch_norm_relu`.

    A ``bfloat16``/``float16`` ``x`` is normalised in float32 (statistics and the affine map),
    and ``y`` is returned in ``x``'s dtype; for float32 and float64 nothing is cast.
    """
    dtype = x.dtype
    x, scale, bias = (_at_least_float32(a) for a in (x, scale, bias))
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x - mean), axis=axes) + epsilon)
    y = (x - mean) * (rstd * scale) + bias
    return _as(jnp.maximum(y, 0) if relu else y, dtype), (mean, rstd)


def _at_least_float32(x: chex.Array) -> chex.Array:
    """``x`` in float32 when it is a narrower float (bfloat16, float16); else unchanged."""
    return x.astype(jnp.float32) if jnp.finfo(x.dtype).bits < 32 else x


def _as(x: chex.Array, dtype) -> chex.Array:
    """``x`` cast to ``dtype``; no op at all when it already has it."""
    return x if x.dtype == dtype else x.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm(
    x: chex.Array, scale: chex.Array, bias: chex.Array, epsilon: float = 1e-3, relu: bool = False
) -> chex.Array:
    """Normalises ``x: [..., C]`` with its own statistics over all but the last axis.

    ``scale, bias: [C]``; returns ``[..., C]``, followed by a ReLU when ``relu``. The
    backward pass is the closed form (two reductions and one elementwise pass instead of the
    many passes of the forward's autodiff; ``benchmarks/maml_orders.py`` times the meta-step
    it is part of); it is itself differentiable, so second-order MAML differentiates through it.
    """
    return batch_norm_forward(x, scale, bias, epsilon, relu)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, relu):
    y, (mean, rstd) = batch_norm_forward(x, scale, bias, epsilon, relu)
    return y, (x, scale, mean, rstd, y if relu else None)  # y: the ReLU mask only


def _batch_norm_bwd(epsilon, relu, residuals, grad):
    del epsilon
    x, scale, mean, rstd, y = residuals
    dtypes = (x.dtype, scale.dtype)  # narrow floats: computed in float32, returned as given
    x, scale, grad = (_at_least_float32(a) for a in (x, scale, grad))
    axes = tuple(range(x.ndim - 1))
    if relu:
        grad = jnp.where(y > 0, grad, 0)
    x_hat = (x - mean) * rstd
    grad_bias = jnp.sum(grad, axis=axes)
    grad_scale = jnp.sum(grad * x_hat, axis=axes)
    count = x.size // x.shape[-1]
    grad_x = (scale * rstd / count) * (count * grad - grad_bias - x_hat * grad_scale)
    return _as(grad_x, dtypes[0]), _as(grad_scale, dtypes[1]), _as(grad_bias, dtypes[1])


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)
