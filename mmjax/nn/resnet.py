"""ResNet-12 backbone (TADAM / MetaOptNet variant) built on the vmap-friendly convolution.

Oreshkin et al. (2018) and Lee et al. (2019): 4 residual blocks of widths 64-160-320-640;
each block is three 3x3 convolutions with batch norm, LeakyReLU(0.1) after the first two,
a 1x1 convolution + batch norm on the shortcut, the sum, LeakyReLU(0.1), 2x2 max-pool.
84x84 inputs give a ``[5, 5, 640]`` map, averaged here over space (``[640]`` features);
MetaOptNet's DropBlock is not included (no hidden randomness: the network is a pure
function of its parameters). Batch norm uses the current batch's statistics, as `Conv4`
does (`BatchStatNorm`), so per-task weights under ``vmap`` / ``lax.scan`` need no state.
Convolutions are `Conv2D` (``conv_impl="auto"``: im2col + one matmul on CPU, where a
``vmap`` over per-task kernels would otherwise lower to a slow grouped convolution;
``lax.conv`` on accelerators). ``widths=(32, 64, 128, 256)`` is a narrower, MAML-friendly
option (second-order MAML through the full widths is memory-hungry).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.conv import BatchStatNorm, Conv2D

RESNET12_WIDTHS = (64, 160, 320, 640)


class ResidualBlock(nn.Module):
    """One ResNet-12 block.

    Call: ``x: [batch, height, width, channels] -> [batch, height // 2, width // 2,
    features]``.
    """

    features: int
    conv_impl: str = "auto"
    negative_slope: float = 0.1

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        # The batch norms cancel each conv's bias: kept as a parameter, not added (as Conv4).
        conv = lambda k: Conv2D(
            self.features, kernel_size=k, conv_impl=self.conv_impl, add_bias=False
        )
        shortcut = BatchStatNorm()(conv(1)(x))
        y = x
        for layer in range(3):
            y = BatchStatNorm()(conv(3)(y))
            if layer < 2:
                y = nn.leaky_relu(y, self.negative_slope)
        y = nn.leaky_relu(y + shortcut, self.negative_slope)
        return nn.max_pool(y, (2, 2), strides=(2, 2), padding="VALID")


class ResNet12(nn.Module):
    """ResNet-12 with ``len(widths)`` residual blocks, then the spatial mean.

    Call: ``x: [batch, height, width, channels] -> [batch, widths[-1]]`` (height and width
    at least ``2 ** len(widths)``; 84 -> 42 -> 21 -> 10 -> 5 with 4 blocks).
    """

    widths: tuple[int, ...] = RESNET12_WIDTHS
    conv_impl: str = "auto"
    negative_slope: float = 0.1

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        if x.ndim != 4:
            raise ValueError(
                f"ResNet12 input x must be [batch, height, width, channels]; got shape {x.shape}"
            )
        widths = tuple(self.widths)
        if not widths or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths
        ):
            raise ValueError(f"ResNet12 widths={self.widths!r} must be positive ints")
        if min(x.shape[1:3]) < 2 ** len(widths):
            raise ValueError(
                f"ResNet12 with {len(widths)} blocks halves the input {len(widths)} times; "
                f"height and width must be >= {2 ** len(widths)}, got {x.shape[1:3]}"
            )
        for features in widths:
            x = ResidualBlock(features, self.conv_impl, self.negative_slope)(x)
        return jnp.mean(x, axis=(1, 2))
