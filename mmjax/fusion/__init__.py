"""Fusion layers: called as ``module.apply(params, features, mask)``.

``features`` is a sequence of ``M`` arrays ``[B, D_m]``, ``mask`` is ``[B, M]`` (batch,
modalities; 1 = modality present), the layout :class:`mmjax.data.Episode` gives. See
:mod:`mmjax.fusion.common` for the masking contract and its helpers.
"""

from mmjax.fusion.attention import AttentionFusion, CrossModalAttention
from mmjax.fusion.concat import ConcatFusion
from mmjax.fusion.film import FiLMFusion
from mmjax.fusion.gated import GatedFusion
from mmjax.fusion.hybrid import HybridFusion
from mmjax.fusion.late import LateFusion
from mmjax.fusion.registry import FUSION_METHODS, make_fusion
from mmjax.fusion.tensor import LowRankTensorFusion, TensorFusion

__all__ = [
    "FUSION_METHODS",
    "AttentionFusion",
    "ConcatFusion",
    "CrossModalAttention",
    "FiLMFusion",
    "GatedFusion",
    "HybridFusion",
    "LateFusion",
    "LowRankTensorFusion",
    "TensorFusion",
    "make_fusion",
]
