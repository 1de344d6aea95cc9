"""Feature-wise linear modulation (FiLM) of one modality by the others."""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion import common


def film(x: chex.Array, gamma: chex.Array, beta: chex.Array) -> jax.Array:
    """FiLM modulation ``x * (1 + gamma) + beta`` (``gamma = beta = 0`` is the identity).

    Args:
      x: ``[..., d]`` features.
      gamma: scale offsets, broadcastable to ``x``.
      beta: shifts, broadcastable to ``x``.

    Returns:
      Modulated features shaped like ``x``.
    """
    return x * (1 + gamma) + beta


class FiLMFusion(nn.Module):
    """Modulates modality 0 by ``gamma, beta`` predicted from modalities ``1 .. M-1``.

    ::

        h            = W_0 x_0 + b_0                           # [batch, d]
        gamma_m, beta_m = split(W_m x_m + b_m)                  # m >= 1, each [batch, d]
        gamma, beta  = masked mean over present m >= 1 of gamma_m, beta_m
        z            = film(h, gamma, beta) = h * (1 + gamma) + beta

    When every conditioning modality of a sample is masked, ``gamma = beta = 0`` and the output
    equals the unmodulated projection ``h``. When modality 0 is masked its input is replaced by
    zeros, so ``h`` is the projection bias ``b_0``, modulated by the conditioning modalities.

    Attributes:
      features_out: output width ``d``.

    Call:
      ``features``: ``M >= 2`` arrays ``[batch, D_m]`` (dimensions may differ); ``mask``:
      ``[B, M]``. Returns ``[batch, features_out]``. Sows ``gamma`` and ``beta``
      (``[batch, d]`` each) as ``intermediates/gamma`` and ``intermediates/beta``. An all-masked
      sample raises in eager calls and gives zeros when traced.
    """

    features_out: int

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        common.check_width("FiLMFusion", "features_out", self.features_out)
        features, present = common.prepare(features, mask)
        if len(features) < 2:
            raise ValueError(
                f"FiLMFusion needs features for >= 2 modalities (modality 0 is modulated by the "
                f"others); got {len(features)} with shapes {[tuple(x.shape) for x in features]}."
            )
        common.check_modality_params(self, "condition_", len(features), offset=1)
        projected = nn.Dense(self.features_out, name="project")(features[0])
        modulation = jnp.stack(
            [
                nn.Dense(2 * self.features_out, name=f"condition_{m}")(x)
                for m, x in enumerate(features[1:], start=1)
            ]
        )  # [M - 1, batch, 2d]
        modulation = common.masked_mean(modulation, present.T[1:, :, None], axis=0)
        gamma, beta = jnp.split(modulation, 2, axis=-1)
        self.sow("intermediates", "gamma", gamma)
        self.sow("intermediates", "beta", beta)
        return common.zero_all_masked(film(projected, gamma, beta), present)
