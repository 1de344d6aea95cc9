"""Fusion layers: called as ``module.apply(params, features, mask)``.

``features`` is a sequence of ``M`` arrays ``[batch, D_m]``, ``mask`` is ``[M, batch]``
(1 = modality present). See :mod:`mmjax.fusion.common` for the masking contract.
"""

from mmjax.fusion.attention import AttentionFusion, CrossModalAttention
from mmjax.fusion.common import (
    check_mask,
    mask_features,
    masked_mean,
    masked_softmax,
    validate_features,
)
from mmjax.fusion.concat import ConcatFusion
from mmjax.fusion.film import FiLMFusion, film
from mmjax.fusion.gated import GatedFusion
from mmjax.fusion.hybrid import HybridFusion
from mmjax.fusion.late import LateFusion
from mmjax.fusion.registry import FUSION_METHODS, make_fusion
from mmjax.fusion.tensor import LowRankTensorFusion, TensorFusion

__all__ = [
    "AttentionFusion",
    "ConcatFusion",
    "CrossModalAttention",
    "FUSION_METHODS",
    "FiLMFusion",
    "GatedFusion",
    "HybridFusion",
    "LateFusion",
    "LowRankTensorFusion",
    "TensorFusion",
    "check_mask",
    "film",
    "make_fusion",
    "mask_features",
    "masked_mean",
    "masked_softmax",
    "validate_features",
]
