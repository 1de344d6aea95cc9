"""Late (decision) fusion: one classifier head per modality, logits combined."""

from __future__ import annotations

from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion import common

WEIGHTINGS = ("mean", "learned")


def check_weighting(weighting: str) -> None:
    """Raises ``ValueError`` unless ``weighting`` is one of :data:`WEIGHTINGS`."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}.")


def combine_logits(
    logits: chex.Array, present: chex.Array, source_logits: Optional[chex.Array] = None
) -> tuple[jax.Array, jax.Array]:
    """Combines per-source logits over the source axis, masked sources excluded.

    Args:
      logits: ``[S, batch, num_classes]``, one slice per source.
      present: ``[B, S]`` bool mask (batch, sources).
      source_logits: ``[S]`` learned scores (softmax-weighted, renormalised over the present
        sources), or ``None`` for the plain masked mean.

    Returns:
      ``(fused, weights)``: ``[batch, num_classes]`` (zeros for a sample with no source
      present) and the ``[S, batch]`` weights (zero for masked sources).
    """
    present = present.T  # [S, batch], as the stacked logits
    if source_logits is None:
        scores = jnp.zeros(present.shape, logits.dtype)
    else:
        scores = jnp.broadcast_to(source_logits[:, None], present.shape)
    weights = common.masked_softmax(scores, present, axis=0)
    return jnp.einsum("sb,sbc->bc", weights, logits), weights


class LateFusion(nn.Module):
    """Per-modality Dense heads whose logits are averaged over the present modalities.

    Attributes:
      num_classes: number of output logits.
      weighting: ``"mean"`` (plain masked mean) or ``"learned"`` (softmax of one learned score
        per modality, initialised equal, renormalised over the present modalities).

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]`` (dimensions may differ); ``mask``:
      ``[B, M]``. Returns fused logits ``[batch, num_classes]``. Sows the ``[M, batch]``
      modality weights (zero for masked ones) as ``intermediates/weights``. An all-masked
      sample raises in eager calls and gives zero logits when traced.
    """

    num_classes: int
    weighting: str = "mean"

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        check_weighting(self.weighting)
        common.check_width("LateFusion", "num_classes", self.num_classes)
        features, present = common.prepare(features, mask)
        common.check_modality_params(self, "head_", len(features))
        logits = jnp.stack(
            [nn.Dense(self.num_classes, name=f"head_{m}")(x) for m, x in enumerate(features)]
        )
        source_logits = None
        if self.weighting == "learned":
            source_logits = self.param(
                "modality_logits", nn.initializers.zeros_init(), (len(features),), logits.dtype
            )
        fused, weights = combine_logits(logits, present, source_logits)
        self.sow("intermediates", "weights", weights)
        return fused
