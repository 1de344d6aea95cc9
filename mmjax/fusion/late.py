"""Late (decision) fusion: one classifier head per modality, logits combined."""

from __future__ import annotations

from typing import Sequence

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
    module: nn.Module, logits: chex.Array, present: chex.Array, weighting: str
) -> jax.Array:
  """Combines per-source logits over the source axis, masked sources excluded.

  Sows the ``[S, batch]`` combination weights as ``intermediates/weights`` of ``module``.

  Args:
    module: the calling module (owns the ``modality_logits`` parameter when learned).
    logits: ``[S, batch, num_classes]``, one slice per source.
    present: ``[S, batch]`` bool mask.
    weighting: ``"mean"`` (masked mean) or ``"learned"`` (softmax of a learned ``[S]``
      parameter, renormalised over the present sources).

  Returns:
    ``[batch, num_classes]``; zeros for a sample with no source present.
  """
  num_sources, batch = present.shape
  if weighting == "mean":
    scores = jnp.zeros((num_sources, batch), logits.dtype)
  else:
    source_logits = module.param(
        "modality_logits", nn.initializers.zeros_init(), (num_sources,), logits.dtype
    )
    scores = jnp.broadcast_to(source_logits[:, None], (num_sources, batch))
  weights = common.masked_softmax(scores, present, axis=0)
  module.sow("intermediates", "weights", weights)
  return jnp.einsum("sb,sbc->bc", weights, jnp.where(present[..., None], logits, 0))


class LateFusion(nn.Module):
  """Per-modality Dense heads whose logits are averaged over the present modalities.

  Attributes:
    num_classes: number of output logits.
    weighting: ``"mean"`` (plain masked mean) or ``"learned"`` (softmax of one learned score
      per modality, initialised equal, renormalised over the present modalities).

  Call:
    ``features``: ``M`` arrays ``[batch, D_m]`` (dimensions may differ); ``mask``:
    ``[M, batch]``. Returns fused logits ``[batch, num_classes]``. Sows the ``[M, batch]``
    modality weights (zero for masked ones) as ``intermediates/weights``. An all-masked
    sample raises in eager calls and gives zero logits when traced.
  """

  num_classes: int
  weighting: str = "mean"

  @nn.compact
  def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
    check_weighting(self.weighting)
    features, present = common.prepare(features, mask)
    logits = jnp.stack(
        [nn.Dense(self.num_classes, name=f"head_{m}")(x) for m, x in enumerate(features)]
    )
    return combine_logits(self, logits, present, self.weighting)
