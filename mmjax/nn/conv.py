"""Conv-4 backbone with a convolution that stays fast under ``vmap`` over per-task weights.

On CPU, ``jax.vmap`` of ``lax.conv_general_dilated`` over a batch of *different* kernels
(one per task, as after MAML's inner loop) lowers to a grouped convolution that XLA:CPU
runs very slowly (``benchmarks/maml_orders.py`` times the meta-step with either ``conv_impl``;
figures in ``docs/benchmarks.md``). The ``im2col`` formulation below builds the patches from 9
strided slices and does one matmul; under ``vmap`` it becomes a batched matmul, which XLA:CPU
runs at a good fraction of its matmul peak (the same benchmark reports the fraction).
On GPU/TPU, the vmapped ``lax`` conv becomes a grouped convolution, which cuDNN/XLA:TPU
handle natively. ``conv_impl="auto"`` therefore picks ``im2col`` on CPU and ``lax``
elsewhere; ``"im2col"`` or ``"lax"`` forces one (``config.model.conv_impl`` in the configs).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.nn.conv_norm import conv_batch_norm_relu
from mmjax.nn.norm import batch_norm
from mmjax.nn.pool import max_pool_2x2
from mmjax.validation import check_float_dtype

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


def im2col_patches(x: chex.Array, kernel_size: int, *, stride: int = 1) -> tuple[chex.Array, tuple]:
    """im2col patches of ``x: [batch, height, width, in_channels]``.

    Returns ``(patches, out_shape)``: ``patches: [batch * out_h * out_w, k * k * in_channels]``
    in ``(i, j, c)`` column order (the order of a ``[k, k, in_channels, out]`` kernel reshaped
    to ``[k * k * in_channels, out]``), built from ``k * k`` strided slices, with padding
    ``k // 2`` on each side; ``out_shape = (batch, out_h, out_w)``.
    """
    k = kernel_size
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
    return patches.reshape(-1, depth), (batch, out_h, out_w)


def im2col_columns(x: chex.Array, kernel_size: int, *, stride: int = 1) -> tuple[chex.Array, tuple]:
    """:func:`im2col_patches` transposed.

    Returns ``(columns, out_shape)`` with ``columns: [k * k * in_channels, batch * out_h * out_w]``.
    """
    patches, out_shape = im2col_patches(x, kernel_size, stride=stride)
    return patches.T, out_shape


@jax.custom_vjp
def patch_matmul(patches: chex.Array, kernel: chex.Array) -> chex.Array:
    """``patches @ kernel`` (``[N, K] x [K, C] -> [N, C]``), backward pass laid out for XLA:CPU.

    The kernel gradient ``patches^T @ g`` contracts the major axis of both operands; XLA:CPU
    runs that form with Eigen, slower than ``(g^T @ patches)^T`` for large products, and
    folds any plain transpose back into it, so the product is taken as ``g^T @ patches``
    behind an ``optimization_barrier`` when the patches are at least 64 deep; a thin first
    layer keeps the plain form. ``python benchmarks/kernel_grad_layout.py`` times both forms
    at every Conv-4 shape (figures in ``docs/design.md``). The backward pass is itself
    differentiable (second-order MAML).
    """
    return patches @ kernel


def _patch_matmul_fwd(patches, kernel):
    return patches @ kernel, (patches, kernel)


def _patch_matmul_bwd(residuals, grad):
    patches, kernel = residuals
    if patches.shape[1] >= 64:
        grad_kernel = jax.lax.optimization_barrier(jnp.einsum("nc,nk->ck", grad, patches)).T
    else:  # a thin [N, 9] first layer: the plain form is faster (benchmarks/kernel_grad_layout.py)
        grad_kernel = jnp.einsum("nk,nc->kc", patches, grad)
    return jnp.einsum("nc,kc->nk", grad, kernel), grad_kernel


patch_matmul.defvjp(_patch_matmul_fwd, _patch_matmul_bwd)


def conv2d_im2col(x: chex.Array, kernel: chex.Array, *, stride: int = 1) -> chex.Array:
    """2-D convolution as strided-slice patches plus one matmul (:func:`patch_matmul`).

    Args:
      x: ``[batch, height, width, in_channels]``.
      kernel: ``[k, k, in_channels, out_channels]`` (square, odd ``k``).
      stride: spatial stride.

    Returns:
      ``[batch, out_height, out_width, out_channels]``, equal to ``lax.conv`` with padding
      ``k // 2`` on each side.
    """
    patches, out_shape = im2col_patches(x, kernel.shape[0], stride=stride)
    out = patch_matmul(patches, kernel.reshape(patches.shape[1], -1))
    return out.reshape(*out_shape, -1)


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
    With ``as_columns=True`` nothing is multiplied: the call returns ``(columns, kernel,
    out_shape)``, the transposed patches ``[k * k * in_channels, batch * out_h * out_w]``
    (:func:`im2col_columns`), the kernel as ``[k * k * in_channels, features]`` and
    ``(batch, out_h, out_w)``, for an op that fuses the matmul with what follows (the bias
    is not applied then).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    conv_impl: str = "auto"
    add_bias: bool = True

    @nn.compact
    def __call__(self, x: chex.Array, *, as_columns: bool = False):
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if as_columns:
            columns, out_shape = im2col_columns(x, self.kernel_size, stride=self.stride)
            return columns, kernel.astype(x.dtype).reshape(columns.shape[0], -1), out_shape
        impl = resolve_conv_impl(self.conv_impl)
        fn = conv2d_im2col if impl == "im2col" else conv2d_lax
        out = fn(x, kernel.astype(x.dtype), stride=self.stride)
        return out + bias.astype(x.dtype) if self.add_bias else out


class BatchStatNorm(nn.Module):
    """Batch norm that always uses the current batch's statistics (as in MAML).

    No running averages are kept, so the module has parameters (scale, bias) only and
    the network stays a pure function of ``params``. In few-shot learning this is
    *transductive*: query statistics are computed over the whole query set of the task.
    ``relu=True`` fuses the following ReLU (same parameters, one backward pass less).

    Call: ``x: [..., C] -> [..., C]``. With ``conv_kernel: [K, C]`` (and ``relu=True``), ``x``
    is instead the transposed patches ``[K, N]`` of the convolution whose output this layer
    normalises (``Conv2D(as_columns=True)``), and the call returns ``[N, C]`` computed by
    :func:`mmjax.nn.conv_norm.conv_batch_norm_relu` (convolution, norm and ReLU as one op).
    """

    epsilon: float = 1e-3
    relu: bool = False

    @nn.compact
    def __call__(self, x: chex.Array, *, conv_kernel: chex.Array | None = None) -> chex.Array:
        features = x.shape[-1] if conv_kernel is None else conv_kernel.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        scale, bias = scale.astype(x.dtype), bias.astype(x.dtype)
        if conv_kernel is not None:
            if not self.relu:
                raise ValueError("BatchStatNorm(conv_kernel=...) needs relu=True (the fused op)")
            return conv_batch_norm_relu(x, conv_kernel, scale, bias, self.epsilon)
        return batch_norm(x, scale, bias, self.epsilon, self.relu)


class Conv4(nn.Module):
    """Conv-4 backbone of Finn et al. (2017), as in learn2learn's ``OmniglotCNN``.

    ``num_blocks`` x [3x3 conv with ``features`` filters, batch-stat norm, ReLU, then
    stride 2 (``pool="stride"``, the Omniglot variant) or 2x2 max-pool
    (``pool="max"``, the mini-ImageNet variant)], then the spatial mean.
    ``fuse_first_block`` (with the im2col convolution) runs the first block's convolution,
    norm and ReLU as one op (:func:`mmjax.nn.conv_norm.conv_batch_norm_relu`), whose backward
    pass skips four passes over the network's largest activations; same function and
    parameters, gradients equal up to rounding.

    Call: ``x: [batch, height, width, channels] -> [batch, features]``; ``x`` must be
    floating point (integer images, e.g. ``uint8`` 0..255, raise ``TypeError``: scale them).
    """

    features: int = 64
    num_blocks: int = 4
    pool: str = "stride"
    conv_impl: str = "auto"
    fuse_first_block: bool = True

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        if x.ndim != 4:
            raise ValueError(
                f"Conv4 input x must be [batch, height, width, channels]; got shape {x.shape}"
            )
        check_float_dtype(x, "Conv4 input x")
        if self.pool not in ("stride", "max"):
            raise ValueError(f"pool={self.pool!r} is not one of ('stride', 'max')")
        for name in ("features", "num_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Conv4 {name}={value!r} must be an int >= 1")
        fuse_first = (  # the fused op is float32-only: bfloat16 runs the unfused layers
            self.fuse_first_block
            and resolve_conv_impl(self.conv_impl) == "im2col"
            and x.dtype == jnp.float32
        )
        for block in range(self.num_blocks):
            stride = 2 if self.pool == "stride" else 1
            # The batch norm below cancels the conv's bias: it is kept as a parameter (as in
            # learn2learn's OmniglotCNN) but not added, which saves two passes per layer.
            conv = Conv2D(self.features, stride=stride, conv_impl=self.conv_impl, add_bias=False)
            if block == 0 and fuse_first:
                columns, kernel, out_shape = conv(x, as_columns=True)
                x = BatchStatNorm(relu=True)(columns, conv_kernel=kernel).reshape(*out_shape, -1)
            else:
                x = BatchStatNorm(relu=True)(conv(x))
            if self.pool == "max":
                x = max_pool_2x2(x)
        return jnp.mean(x, axis=(1, 2))
