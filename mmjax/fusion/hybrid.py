"""Hybrid fusion: an early-fusion head and per-modality heads, logits combined."""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion import common, late


class HybridFusion(nn.Module):
    """Early-fused head plus one head per modality; logits combined over present sources.

    The early head is a Dense layer on the concatenation of the masked features and the mask
    indicators (as in :class:`~mmjax.fusion.concat.ConcatFusion`); it counts as present for a
    sample when any modality is. The ``M + 1`` logits are combined like
    :class:`~mmjax.fusion.late.LateFusion` (source 0 is the early head).

    Attributes:
      num_classes: number of output logits.
      weighting: ``"mean"`` or ``"learned"`` (a learned ``[M + 1]`` parameter
        ``source_logits``), as in :class:`~mmjax.fusion.late.LateFusion`.

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]``; ``mask``: ``[B, M]``. Returns fused
      logits ``[batch, num_classes]``. Sows the ``[M + 1, batch]`` source weights as
      ``intermediates/weights``. An all-masked sample raises in eager calls and gives zero
      logits when traced.
    """

    num_classes: int
    weighting: str = "mean"

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        late.check_weighting(self.weighting)
        common.check_width("HybridFusion", "num_classes", self.num_classes)
        features, present = common.prepare(features, mask)
        common.check_modality_params(self, "head_", len(features))
        early = nn.Dense(self.num_classes, name="early_head")(
            common.concat_masked(features, present, indicators=True)
        )
        logits = jnp.stack(
            [early]
            + [nn.Dense(self.num_classes, name=f"head_{m}")(x) for m, x in enumerate(features)]
        )
        sources = jnp.concatenate([jnp.any(present, axis=1, keepdims=True), present], axis=1)
        source_logits = None
        if self.weighting == "learned":
            source_logits = self.param(
                "source_logits", nn.initializers.zeros_init(), (len(features) + 1,), logits.dtype
            )
        fused, weights = late.combine_logits(logits, sources, source_logits)
        self.sow("intermediates", "weights", weights)
        return fused
