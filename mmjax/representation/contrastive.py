"""Symmetric InfoNCE (CLIP, Radford et al. 2021) between two modalities.

For paired embeddings ``a, b: [batch, D]`` (row ``i`` of both comes from the same drawing),
both are L2-normalised and the logits are ``a_i . b_j / temperature``; the loss is the mean of
the cross-entropies image->strokes (rows) and strokes->image (columns) with the diagonal as the
target. The temperature is learnable through ``log_temperature`` (a parameter of the caller's
pytree, :func:`init_log_temperature`), clipped to ``[min_temperature, inf)`` as CLIP clips its
logit scale at 100.

Pairs with a missing modality (``valid: [batch]`` False) are neither anchors nor negatives.
"""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.validation import is_concrete

DEFAULT_TEMPERATURE = 0.07


def init_log_temperature(temperature: float = DEFAULT_TEMPERATURE) -> jax.Array:
    """The learnable scalar ``log(temperature)`` (shape ``[]``)."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature > 0
    ):
        raise ValueError(f"temperature={temperature!r} must be a number > 0")
    return jnp.asarray(np.log(temperature), jnp.float32)


def l2_normalize(x: chex.Array, eps: float = 1e-12) -> jax.Array:
    """``x / |x|`` over the last axis: ``[..., D] -> [..., D]`` (gradient-safe at 0)."""
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def info_nce(
    a: chex.Array,
    b: chex.Array,
    log_temperature: chex.Array,
    *,
    valid: Optional[chex.Array] = None,
    min_temperature: float = 0.01,
) -> tuple[jax.Array, dict]:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b``.

    Args:
      a: ``[batch, D]`` embeddings of modality 1 (normalised inside).
      b: ``[batch, D]`` embeddings of modality 2, row ``i`` paired with ``a[i]``.
      log_temperature: scalar, ``log`` of the softmax temperature (learnable).
      valid: optional ``[batch]`` bool / 0-1, False for pairs with a missing modality.
      min_temperature: lower clip of the temperature.

    Returns:
      ``(loss, metrics)``: the mean of both directions' cross-entropy over the valid pairs,
      and ``{"loss", "temperature", "accuracy"}`` (top-1 matching accuracy a->b).

    Raises:
      ValueError: a batch of fewer than 2 pairs, or a concrete ``valid`` with fewer than 2
        valid pairs (the loss would be 0 with zero gradient); a traced ``valid`` cannot be
        read, and gives loss 0 then.
    """
    a_shape, b_shape = tuple(np.shape(a)), tuple(np.shape(b))
    if len(a_shape) != 2:
        raise ValueError(f"a has shape {a_shape}; expected [batch, D]")
    if b_shape != a_shape:
        raise ValueError(f"b has shape {b_shape}; expected that of a {a_shape} (paired rows)")
    if np.shape(log_temperature) != ():
        raise ValueError(
            f"log_temperature has shape {np.shape(log_temperature)}; expected a scalar"
        )
    batch = a_shape[0]
    if batch < 2:
        raise ValueError(
            f"a has shape {a_shape}; info_nce needs a batch of >= 2 pairs (each pair's "
            "negatives are the other rows: with one pair the loss is 0 with zero gradient)"
        )
    if valid is None:
        valid = jnp.ones((batch,), bool)
    elif tuple(np.shape(valid)) != (batch,):
        raise ValueError(f"valid has shape {tuple(np.shape(valid))}; expected [batch] = ({batch},)")
    elif is_concrete(valid) and np.count_nonzero(np.asarray(valid)) < 2:
        raise ValueError(
            f"valid marks {np.count_nonzero(np.asarray(valid))} of {batch} pairs as valid; "
            "info_nce needs >= 2 valid pairs (a traced valid with fewer gives loss 0)"
        )
    valid = jnp.asarray(valid).astype(bool)
    a = l2_normalize(jnp.where(valid[:, None], a, 0.0))
    b = l2_normalize(jnp.where(valid[:, None], b, 0.0))
    temperature = jnp.maximum(jnp.exp(log_temperature), min_temperature)
    logits = a @ b.T / temperature
    pair = valid[:, None] & valid[None, :]
    logits = jnp.where(pair, logits, -1e9)
    diagonal = jnp.diagonal(logits)
    rows = jax.nn.logsumexp(logits, axis=1) - diagonal
    cols = jax.nn.logsumexp(logits, axis=0) - diagonal
    count = jnp.maximum(jnp.sum(valid), 1)
    loss = jnp.sum(jnp.where(valid, 0.5 * (rows + cols), 0.0)) / count
    correct = (jnp.argmax(logits, axis=1) == jnp.arange(batch)) & valid
    metrics = {
        "loss": loss,
        "temperature": temperature,
        "accuracy": jnp.sum(correct) / count,
    }
    return loss, metrics
