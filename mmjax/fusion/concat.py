"""Early fusion: concatenation of the (masked) modality features."""

from __future__ import annotations

from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax

from mmjax.fusion import common


class ConcatFusion(nn.Module):
    """Concatenates the modality features, masked ones replaced by zeros, plus the mask.

    The mask is appended as ``M`` indicator features (1.0 present, 0.0 masked), so a following
    layer can tell a missing modality from one whose features happen to be zero. Modality
    dimensions may differ.

    Attributes:
      features_out: if set, a Dense layer projects the concatenation to this width; if
        ``None`` the concatenation itself is returned.

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]``; ``mask``: ``[B, M]`` bool or 0/1.
      Returns ``[batch, features_out]``, or ``[batch, sum_m D_m + M]`` without projection.
      A sample with every modality masked raises in eager calls (see
      :func:`mmjax.fusion.common.check_mask`) and gives a row of zeros when traced.
    """

    features_out: Optional[int] = None

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        if self.features_out is not None:
            common.check_width("ConcatFusion", "features_out", self.features_out)
        features, present = common.prepare(features, mask)
        fused = common.concat_masked(features, present, indicators=True)
        if self.features_out is not None:
            common.check_input_width(
                self, "project", fused.shape[-1], "the concatenated features and mask"
            )
            fused = nn.Dense(self.features_out, name="project")(fused)
        return common.zero_all_masked(fused, present)
