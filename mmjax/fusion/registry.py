"""Fusion methods by name."""

from __future__ import annotations

import difflib
from typing import Any

import flax.linen as nn

from mmjax.fusion.attention import AttentionFusion, CrossModalAttention
from mmjax.fusion.concat import ConcatFusion
from mmjax.fusion.film import FiLMFusion
from mmjax.fusion.gated import GatedFusion
from mmjax.fusion.hybrid import HybridFusion
from mmjax.fusion.late import LateFusion
from mmjax.fusion.tensor import LowRankTensorFusion, TensorFusion

FUSION_METHODS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "late": LateFusion,
    "hybrid": HybridFusion,
    "attention": AttentionFusion,
    "cross_attention": CrossModalAttention,
    "tensor": TensorFusion,
    "low_rank_tensor": LowRankTensorFusion,
    "gated": GatedFusion,
    "film": FiLMFusion,
}


def make_fusion(name: str, **kwargs: Any) -> nn.Module:
    """Builds the fusion module registered as ``name`` with constructor ``kwargs``.

    Args:
      name: a key of :data:`FUSION_METHODS`.
      **kwargs: the module's attributes, e.g. ``features_out=64`` or ``num_classes=5``.

    Returns:
      The (unbound) Flax module.

    Raises:
      ValueError: for an unknown name; the message lists the valid names and the closest one.
    """
    if name not in FUSION_METHODS:
        close = difflib.get_close_matches(name, FUSION_METHODS, n=1, cutoff=0.0)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown fusion method {name!r}.{hint} Valid names: {sorted(FUSION_METHODS)}."
        )
    return FUSION_METHODS[name](**kwargs)
