"""Encoders: Conv-4 and ResNet-12 (vmap-friendly convolution), MLP, stroke-sequence encoders,
classifier."""

from mmjax.nn.classifier import Classifier
from mmjax.nn.conv import (
    BatchStatNorm,
    Conv2D,
    Conv4,
    batch_norm,
    conv2d_im2col,
    conv2d_lax,
    im2col_columns,
    im2col_patches,
    patch_matmul,
    resolve_conv_impl,
)
from mmjax.nn.conv_norm import conv_batch_norm_relu
from mmjax.nn.mlp import MLP
from mmjax.nn.multimodal import MultimodalEncoder
from mmjax.nn.resnet import RESNET12_WIDTHS, ResidualBlock, ResNet12
from mmjax.nn.sequence import StrokeEncoder

__all__ = [
    "BatchStatNorm",
    "Classifier",
    "Conv2D",
    "Conv4",
    "MLP",
    "MultimodalEncoder",
    "RESNET12_WIDTHS",
    "ResNet12",
    "ResidualBlock",
    "StrokeEncoder",
    "batch_norm",
    "conv2d_im2col",
    "conv2d_lax",
    "conv_batch_norm_relu",
    "im2col_columns",
    "im2col_patches",
    "patch_matmul",
    "resolve_conv_impl",
]
