"""Encoders for pen-stroke sequences ``[batch, length, 3]`` (dx, dy, pen_lift).

Three light encoders share one interface, ``StrokeEncoder(features, kind)``:

* ``"conv"``: 1-D convolutions (kernel 5, stride 2) with LayerNorm and ReLU, then the mean
  over time. The convolution is written as strided slices plus one matmul (``im2col``): under
  ``jax.vmap`` over per-task weights (MAML) it becomes a batched matmul, while ``vmap`` of
  ``lax.conv_general_dilated`` with per-task kernels becomes a grouped convolution that
  XLA:CPU runs slowly. ``conv_impl`` picks the formulation as in :mod:`mmjax.nn.conv`
  (``"auto"``: ``im2col`` on CPU, ``lax`` elsewhere).
* ``"gru"``: ``flax.linen.RNN`` over a ``GRUCell``; the last state.
* ``"transformer"``: pre-LayerNorm self-attention blocks with learned positional
  embeddings; the mean over time.

Optional ``lengths`` (``[batch]`` ints, ``1 <= lengths <= length``) mark right-padded
sequences: steps at and after ``lengths[b]`` have no influence on the output, which then
equals the encoding of the truncated sequence.
"""

from __future__ import annotations

from typing import Optional

import chex
import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.nn.conv import resolve_conv_impl
from mmjax.validation import check_float_dtype

KINDS = ("conv", "gru", "transformer")


def conv1d_output_length(length: int, kernel_size: int, stride: int) -> int:
    """Output length of a 1-D convolution with ``kernel_size // 2`` zero padding each side."""
    return (length + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def conv1d_im2col(x: chex.Array, kernel: chex.Array, *, stride: int = 1) -> jax.Array:
    """1-D convolution as ``kernel_size`` strided slices plus one matmul.

    Args:
      x: ``[batch, length, in_channels]``.
      kernel: ``[kernel_size, in_channels, out_channels]``.
      stride: time stride.

    Returns:
      ``[batch, out_length, out_channels]``, equal to :func:`conv1d_lax` (zero padding
      ``kernel_size // 2`` on each side).
    """
    kernel_size = kernel.shape[0]
    pad = kernel_size // 2
    out_length = conv1d_output_length(x.shape[1], kernel_size, stride)
    x = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
    span = (out_length - 1) * stride + 1
    patches = jnp.stack(
        [x[:, k : k + span : stride, :] for k in range(kernel_size)], axis=2
    )  # [batch, out_length, kernel_size, in_channels]
    patches = einops.rearrange(patches, "b l k c -> b l (k c)")
    return jnp.einsum("blp,po->blo", patches, einops.rearrange(kernel, "k c o -> (k c) o"))


def conv1d_lax(x: chex.Array, kernel: chex.Array, *, stride: int = 1) -> jax.Array:
    """Reference 1-D convolution with ``lax.conv_general_dilated`` (same padding as im2col)."""
    pad = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride,),
        padding=((pad, pad),),
        dimension_numbers=("NWC", "WIO", "NWC"),
    )


def length_mask(lengths: Optional[chex.Array], length: int) -> Optional[jax.Array]:
    """``[batch, length]`` bool mask of the valid steps, or ``None`` without ``lengths``."""
    if lengths is None:
        return None
    return jnp.arange(length)[None, :] < jnp.asarray(lengths)[:, None]


def mean_over_time(x: chex.Array, valid: Optional[chex.Array]) -> jax.Array:
    """Mean of ``x: [batch, length, d]`` over the valid steps (``valid: [batch, length]``)."""
    if valid is None:
        return jnp.mean(x, axis=1)
    total = jnp.sum(jnp.where(valid[..., None], x, 0), axis=1)
    count = jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1)
    return total / count.astype(total.dtype)


class Conv1D(nn.Module):
    """1-D convolution (zero padding ``kernel_size // 2``) formulated per ``conv_impl``.

    Call: ``x: [batch, length, in_channels] -> [batch, out_length, features]``; parameters
    ``kernel: [kernel_size, in_channels, features]`` and ``bias: [features]`` are the same for
    both formulations.
    """

    features: int
    kernel_size: int = 5
    stride: int = 2
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: chex.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        conv = conv1d_im2col if resolve_conv_impl(self.conv_impl) == "im2col" else conv1d_lax
        return conv(x, kernel.astype(x.dtype), stride=self.stride) + bias.astype(x.dtype)


class ConvSequenceEncoder(nn.Module):
    """``num_layers`` x [Conv1D (kernel 5, stride 2), LayerNorm, ReLU], then the time mean.

    Call: ``x: [batch, length, channels]``, optional ``lengths: [batch]`` ->
    ``[batch, features]``. Steps past ``lengths`` are zeroed before each convolution, so the
    result equals the encoding of the truncated sequence.
    """

    features: int = 64
    num_layers: int = 3
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: chex.Array, lengths: Optional[chex.Array] = None) -> jax.Array:
        for _ in range(self.num_layers):
            valid = length_mask(lengths, x.shape[1])
            if valid is not None:
                x = jnp.where(valid[..., None], x, 0)
                lengths = (
                    jnp.asarray(lengths) + 1
                ) // 2  # valid outputs of a stride-2, kernel-5 conv
            x = Conv1D(self.features, kernel_size=5, stride=2, conv_impl=self.conv_impl)(x)
            x = nn.relu(nn.LayerNorm()(x))
        return mean_over_time(x, length_mask(lengths, x.shape[1]))


class GRUSequenceEncoder(nn.Module):
    """``num_layers`` stacked GRUs (``flax.linen.RNN`` over ``GRUCell``); the last state.

    Call: ``x: [batch, length, channels]``, optional ``lengths: [batch]`` ->
    ``[batch, features]`` (the state after step ``lengths[b] - 1``).
    """

    features: int = 64
    num_layers: int = 1

    @nn.compact
    def __call__(self, x: chex.Array, lengths: Optional[chex.Array] = None) -> jax.Array:
        carry = None
        # The state (and so the params) is float32, or float64 for float64 inputs: GRUCell
        # makes its initial carry in param_dtype, which must match the scanned state's dtype.
        param_dtype = jnp.promote_types(x.dtype, jnp.float32)
        for layer in range(self.num_layers):
            cell = nn.GRUCell(self.features, param_dtype=param_dtype)
            carry, x = nn.RNN(cell, return_carry=True, name=f"gru_{layer}")(x, seq_lengths=lengths)
        return carry


class TransformerSequenceEncoder(nn.Module):
    """Pre-LayerNorm self-attention blocks with learned positions; the time mean.

    Call: ``x: [batch, length, channels]`` (``length <= max_length``), optional
    ``lengths: [batch]`` -> ``[batch, features]``. Padded steps are masked out as keys and
    from the mean.
    """

    features: int = 64
    num_layers: int = 1
    num_heads: int = 4
    max_length: int = 256

    @nn.compact
    def __call__(self, x: chex.Array, lengths: Optional[chex.Array] = None) -> jax.Array:
        length = x.shape[1]
        if length > self.max_length:
            raise ValueError(
                f"x has shape {tuple(x.shape)}: length {length} exceeds max_length="
                f"{self.max_length} of the learned positional embeddings."
            )
        positions = self.param(
            "positions", nn.initializers.normal(0.02), (self.max_length, self.features)
        )
        h = nn.Dense(self.features, name="embed")(x) + positions[:length].astype(x.dtype)
        valid = length_mask(lengths, length)
        attention_mask = None if valid is None else nn.make_attention_mask(valid, valid)
        for layer in range(self.num_layers):
            y = nn.LayerNorm(name=f"attention_norm_{layer}")(h)
            h = h + nn.MultiHeadDotProductAttention(
                num_heads=self.num_heads, name=f"attention_{layer}"
            )(y, y, mask=attention_mask)
            y = nn.LayerNorm(name=f"mlp_norm_{layer}")(h)
            y = nn.Dense(2 * self.features, name=f"mlp_in_{layer}")(y)
            h = h + nn.Dense(self.features, name=f"mlp_out_{layer}")(nn.gelu(y))
        return mean_over_time(nn.LayerNorm(name="final_norm")(h), valid)


class StrokeEncoder(nn.Module):
    """Encodes pen-stroke sequences ``x: [batch, length, 3]`` (dx, dy, pen_lift).

    Attributes:
      features: output width.
      kind: ``"conv"``, ``"gru"`` or ``"transformer"`` (see the module docstring).
      num_layers: conv layers / stacked GRUs / attention blocks; ``None`` gives 3 / 1 / 1.
      num_heads: attention heads (``"transformer"`` only; must divide ``features``).
      max_length: longest sequence accepted (``"transformer"`` only).
      conv_impl: ``"auto"``, ``"im2col"`` or ``"lax"`` (``"conv"`` only).

    Call:
      ``x: [batch, length, 3]`` floating point, optional ``lengths: [batch]`` valid steps per
      sequence -> ``[batch, features]``.
    """

    features: int = 64
    kind: str = "conv"
    num_layers: Optional[int] = None
    num_heads: int = 4
    max_length: int = 256
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: chex.Array, lengths: Optional[chex.Array] = None) -> jax.Array:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}.")
        shape = tuple(jnp.shape(x))
        if len(shape) != 3 or shape[-1] != 3:
            raise ValueError(
                f"x has shape {shape}; expected [batch, length, 3] (dx, dy, pen_lift)."
            )
        check_float_dtype(x, "StrokeEncoder input x")
        if lengths is not None and tuple(jnp.shape(lengths)) != shape[:1]:
            raise ValueError(
                f"lengths has shape {tuple(jnp.shape(lengths))}; expected [batch] = ({shape[0]},) "
                f"for x of shape {shape}."
            )
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"num_layers must be None or >= 1; got {self.num_layers}.")
        if self.kind == "transformer" and self.features % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide features={self.features}.")
        x = jnp.asarray(x)
        if lengths is not None:  # padded steps are zeroed so that even NaN there cannot leak
            x = jnp.where(length_mask(lengths, shape[1])[..., None], x, 0)
        default_layers = {"conv": 3, "gru": 1, "transformer": 1}[self.kind]
        num_layers = default_layers if self.num_layers is None else self.num_layers
        if self.kind == "conv":
            encoder = ConvSequenceEncoder(
                self.features, num_layers=num_layers, conv_impl=self.conv_impl, name="conv"
            )
        elif self.kind == "gru":
            encoder = GRUSequenceEncoder(self.features, num_layers=num_layers, name="gru")
        else:
            encoder = TransformerSequenceEncoder(
                self.features,
                num_layers=num_layers,
                num_heads=self.num_heads,
                max_length=self.max_length,
                name="transformer",
            )
        return encoder(x, lengths)
