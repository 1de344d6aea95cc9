"""Conv-4 backbone with a convolution that stays fast under ``vmap`` over per-task weights.

On CPU, ``jax.vmap`` of ``lax.conv_general_dilated`` over a batch of *different* kernels
(one per task, as after MAML's inner loop) lowers to a grouped convolution that XLA:CPU
runs very slowly (a stock conv under ``vmap`` made a second-order Conv-4 meta-step more than
100x slower on a 2-core CPU). The ``im2col`` formulation below builds the patches from 9
strided slices and does one matmul; under ``vmap`` it becomes a batched matmul, which XLA:CPU
runs at a good fraction of its matmul peak (``benchmarks/maml_orders.py`` measures it).
On GPU/TPU, the vmapped ``lax`` conv becomes a grouped convolution, which cuDNN/XLA:TPU
handle natively. ``conv_impl="auto"`` therefore picks ``im2col`` on CPU and ``lax``
elsewhere; ``"im2col"`` or ``"lax"`` forces one (``config.model.conv_impl`` in the configs).
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ("auto", "im2col", "lax")


def resolve_conv_impl(conv_impl: str) -> str:
    """Maps ``"auto"`` to the formulation measured fastest on the default backend."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl={conv_impl!r} is not one of {CONV_IMPLS}")
    if conv_impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "lax"
    return conv_impl


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """Symmetric padding of PyTorch's ``padding=kernel//2``; returns (low, high, out)."""
    pad = kernel // 2
    out = (size + 2 * pad - kernel) // stride + 1
    return pad, pad, out


def conv2d_im2col(x: chex.Array, kernel: chex.Array, *, stride: int = 1) -> chex.Array:
    """2-D convolution as strided-slice patches plus one matmul.

    Args:
      x: ``[batch, height, width, in_channels]``.
      kernel: ``[k, k, in_channels, out_channels]`` (square, odd ``k``).
      stride: spatial stride.

    Returns:
      ``[batch, out_height, out_width, out_channels]``, equal to ``lax.conv`` with padding
      ``k // 2`` on each side.
    """
    k = kernel.shape[0]
    _, height, width, channels = x.shape
    low, high, out_h = _same_padding(height, k, stride)
    _, _, out_w = _same_padding(width, k, stride)
    x = jnp.pad(x, ((0, 0), (low, high), (low, high), (0, 0)))
    patches = [
        jax.lax.slice(
            x,
            (0, i, j, 0),
            (x.shape[0], i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, channels),
            (1, stride, stride, 1),
        )
        for i in range(k)
        for j in range(k)
    ]
    patches = jnp.concatenate(patches, axis=-1)  # [B, Ho, Wo, k*k*Cin], (i, j, c) order
    batch, out_h, out_w, depth = patches.shape
    # Contract the transposed patches [k*k*Cin, B*Ho*Wo]: the kernel gradient is then a plain
    # row-major matmul; XLA:CPU otherwise transposes the output gradient for it, which in the
    # first layer (9 x Cout per pixel) cost more than the matmul itself (measured).
    columns = patches.reshape(-1, depth).T
    out = jnp.einsum("pn,po->no", columns, kernel.reshape(depth, -1))
    return out.reshape(batch, out_h, out_w, -1)


def conv2d_lax(x: chex.Array, kernel: chex.Array, *, stride: int = 1) -> chex.Array:
    """Reference 2-D convolution with ``lax.conv_general_dilated`` (same padding as im2col).

    Args:
      x: ``[batch, height, width, in_channels]``.
      kernel: ``[k, k, in_channels, out_channels]`` (HWIO), odd ``k``.
      stride: spatial stride.

    Returns:
      ``[batch, ceil(height / stride), ceil(width / stride), out_channels]``.
    """
    k = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((k // 2, k // 2),) * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


class Conv2D(nn.Module):
    """3x3 (by default) convolution whose formulation is chosen by ``conv_impl``.

    ``add_bias=False`` keeps the ``bias`` parameter (same parameter tree) but does not add
    it: for a convolution followed by batch norm with batch statistics, which subtracts the
    per-channel mean and so cancels any per-channel constant exactly. The output is then
    unchanged up to float rounding, the bias's gradient is exactly zero (it is zero in exact
    arithmetic either way), and one elementwise pass and one reduction per layer are saved.

    Call: ``x: [batch, height, width, in_channels] -> [batch, out_h, out_w, features]``.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    conv_impl: str = "auto"
    add_bias: bool = True

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        impl = resolve_conv_impl(self.conv_impl)
        fn = conv2d_im2col if impl == "im2col" else conv2d_lax
        out = fn(x, kernel.astype(x.dtype), stride=self.stride)
        return out + bias.astype(x.dtype) if self.add_bias else out


def _batch_norm_forward(x, scale, bias, epsilon, relu):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x - mean), axis=axes) + epsilon)
    y = (x - mean) * (rstd * scale) + bias
    return (jnp.maximum(y, 0) if relu else y), (mean, rstd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm(
    x: chex.Array, scale: chex.Array, bias: chex.Array, epsilon: float = 1e-3, relu: bool = False
) -> chex.Array:
    """Normalises ``x: [..., C]`` with its own statistics over all but the last axis.

    ``scale, bias: [C]``; returns ``[..., C]``, followed by a ReLU when ``relu``. The
    backward pass is the closed form (two reductions and one elementwise pass), which
    XLA:CPU runs several times faster than the autodiff of the forward; it is itself
    differentiable, so second-order MAML differentiates through it.
    """
    return _batch_norm_forward(x, scale, bias, epsilon, relu)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, relu):
    y, (mean, rstd) = _batch_norm_forward(x, scale, bias, epsilon, relu)
    return y, (x, scale, mean, rstd, y if relu else None)  # y: the ReLU mask only


def _batch_norm_bwd(epsilon, relu, residuals, grad):
    del epsilon
    x, scale, mean, rstd, y = residuals
    axes = tuple(range(x.ndim - 1))
    if relu:
        grad = jnp.where(y > 0, grad, 0)
    x_hat = (x - mean) * rstd
    grad_bias = jnp.sum(grad, axis=axes)
    grad_scale = jnp.sum(grad * x_hat, axis=axes)
    count = x.size // x.shape[-1]
    grad_x = (scale * rstd / count) * (count * grad - grad_bias - x_hat * grad_scale)
    return grad_x, grad_scale, grad_bias


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchStatNorm(nn.Module):
    """Batch norm that always uses the current batch's statistics (as in MAML).

    No running averages are kept, so the module has parameters (scale, bias) only and
    the network stays a pure function of ``params``. In few-shot learning this is
    *transductive*: query statistics are computed over the whole query set of the task.
    ``relu=True`` fuses the following ReLU (same parameters, one backward pass less).

    Call: ``x: [..., C] -> [..., C]``.
    """

    epsilon: float = 1e-3
    relu: bool = False

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        return batch_norm(x, scale.astype(x.dtype), bias.astype(x.dtype), self.epsilon, self.relu)


class Conv4(nn.Module):
    """Conv-4 backbone of Finn et al. (2017), as in learn2learn's ``OmniglotCNN``.

    ``num_blocks`` x [3x3 conv with ``features`` filters, batch-stat norm, ReLU, then
    stride 2 (``pool="stride"``, the Omniglot variant) or 2x2 max-pool
    (``pool="max"``, the mini-ImageNet variant)], then the spatial mean.

    Call: ``x: [batch, height, width, channels] -> [batch, features]``.
    """

    features: int = 64
    num_blocks: int = 4
    pool: str = "stride"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        if x.ndim != 4:
            raise ValueError(
                f"Conv4 input x must be [batch, height, width, channels]; got shape {x.shape}"
            )
        if self.pool not in ("stride", "max"):
            raise ValueError(f"pool={self.pool!r} is not one of ('stride', 'max')")
        for name in ("features", "num_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Conv4 {name}={value!r} must be an int >= 1")
        for _ in range(self.num_blocks):
            stride = 2 if self.pool == "stride" else 1
            # The batch norm below cancels the conv's bias: it is kept as a parameter (as in
            # learn2learn's OmniglotCNN) but not added, which saves two passes per layer.
            x = Conv2D(self.features, stride=stride, conv_impl=self.conv_impl, add_bias=False)(x)
            x = BatchStatNorm(relu=True)(x)
            if self.pool == "max":
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        return jnp.mean(x, axis=(1, 2))
