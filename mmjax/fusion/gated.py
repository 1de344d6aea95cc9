"""Gated multimodal unit (Arevalo et al., 2017)."""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion import common


class GatedFusion(nn.Module):
    """Gated multimodal unit generalised to ``M`` modalities.

    ::

        c   = [x_1; ...; x_M; mask]            # masked inputs (zeros) and the mask indicators
        g_m = sigmoid(W_{g,m} c + b_{g,m})     # [batch, d], one gate per modality
        z   = sum_{m present} g_m * tanh(W_m x_m + b_m)

    For two modalities Arevalo et al. tie the gates as ``g`` and ``1 - g``; here every modality
    has its own gate (the usual ``M``-modality form). The mask indicators let the gates tell a
    missing modality from a zero-valued one.

    Attributes:
      features_out: output width ``d``.

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]`` (dimensions may differ); ``mask``:
      ``[B, M]``. Returns ``[batch, features_out]``. Sows the gates ``[M, batch, d]``
      (zero for masked modalities) as ``intermediates/weights``. An all-masked sample raises in
      eager calls and gives zeros when traced.
    """

    features_out: int

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        common.check_width("GatedFusion", "features_out", self.features_out)
        features, present = common.prepare(features, mask)
        common.check_modality_params(self, "project_", len(features))
        context = common.concat_masked(features, present, indicators=True)
        hidden = jnp.stack(
            [
                jnp.tanh(nn.Dense(self.features_out, name=f"project_{m}")(x))
                for m, x in enumerate(features)
            ]
        )  # [M, batch, d]
        gates = jnp.stack(
            [
                nn.sigmoid(nn.Dense(self.features_out, name=f"gate_{m}")(context))
                for m in range(len(features))
            ]
        )
        gates = jnp.where(present.T[..., None], gates, 0)
        self.sow("intermediates", "weights", gates)
        return jnp.sum(gates * hidden, axis=0)
