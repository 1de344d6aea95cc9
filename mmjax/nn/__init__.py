"""Encoders: Conv-4 and ResNet-12 (vmap-friendly convolution), MLP, stroke-sequence encoders,
multimodal encoder, classifier.

Re-exported here: the modules a user builds a model from. The convolution kernels (im2col,
patch matmul, the fused batch norm) live in :mod:`mmjax.nn.conv` and :mod:`mmjax.nn.conv_norm`.
"""

from mmjax.nn.classifier import Classifier
from mmjax.nn.conv import Conv4
from mmjax.nn.mlp import MLP
from mmjax.nn.multimodal import MultimodalEncoder
from mmjax.nn.resnet import ResNet12
from mmjax.nn.sequence import StrokeEncoder

__all__ = [
    "MLP",
    "Classifier",
    "Conv4",
    "MultimodalEncoder",
    "ResNet12",
    "StrokeEncoder",
]
