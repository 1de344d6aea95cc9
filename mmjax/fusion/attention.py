"""Attention fusion: softmax weights over modalities, and cross-modal attention."""

from __future__ import annotations

from typing import Sequence

import chex
import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion import common


class AttentionFusion(nn.Module):
    """Masked attention-weighted sum of per-modality projections.

    With ``h_i = W_i x_i + b_i`` (one Dense per modality, ``[batch, d]``, ``d = features_out``)::

        a_i = softmax_i(W_a h_i + b_a)      # over the present modalities i
        z   = sum_i a_i * h_i

    ``W_a, b_a`` are shared across modalities. By default they give ``d`` scores per modality
    (elementwise attention, ``a_i`` is ``[batch, d]``); with ``scalar=True`` one score per
    modality (``a_i`` is ``[batch, 1]``). Masked modalities get weight exactly 0; the present
    ones sum to 1.

    Attributes:
      features_out: the common projection width ``d``.
      scalar: one attention score per modality instead of one per feature.

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]`` (dimensions may differ); ``mask``:
      ``[B, M]``. Returns ``z``: ``[batch, features_out]``. Sows the attention weights as
      ``intermediates/weights``: ``[M, batch, features_out]``, or ``[M, batch]`` when
      ``scalar``. An all-masked sample raises in eager calls and gives zeros when traced.
    """

    features_out: int
    scalar: bool = False

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        common.check_width("AttentionFusion", "features_out", self.features_out)
        features, present = common.prepare(features, mask)
        common.check_modality_params(self, "project_", len(features))
        projected = jnp.stack(
            [nn.Dense(self.features_out, name=f"project_{m}")(x) for m, x in enumerate(features)]
        )  # [M, batch, d]
        scores = nn.Dense(1 if self.scalar else self.features_out, name="score")(projected)
        weights = common.masked_softmax(scores, present.T[..., None], axis=0)
        self.sow("intermediates", "weights", weights[..., 0] if self.scalar else weights)
        return jnp.sum(weights * projected, axis=0)


class CrossModalAttention(nn.Module):
    """Each modality token attends to the other present modalities, then masked mean pooling.

    Modality ``m`` is projected to a token ``h_m`` of width ``features_out`` (one Dense per
    modality). Multi-head dot-product attention runs over the modality axis; the query of
    modality ``i`` sees the keys of the modalities ``j != i`` that are present (a masked
    softmax: masked keys get weight 0, a query with no other modality present attends to
    nothing). The attended values go through an output Dense and are added to the token
    (residual), and the tokens of the present modalities are averaged.

    Attributes:
      num_heads: number of attention heads; must divide ``features_out``.
      features_out: token and output width.

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]`` (dimensions may differ); ``mask``:
      ``[B, M]``. Returns ``[batch, features_out]``. Sows the attention weights
      ``[batch, num_heads, M (query), M (key)]`` as ``intermediates/weights``. An all-masked
      sample raises in eager calls and gives zeros when traced.
    """

    num_heads: int
    features_out: int

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        common.check_width("CrossModalAttention", "features_out", self.features_out)
        if self.num_heads < 1 or self.features_out % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be positive and divide "
                f"features_out={self.features_out}."
            )
        features, present = common.prepare(features, mask)
        common.check_modality_params(self, "project_", len(features))
        num_modalities = len(features)
        head_dim = self.features_out // self.num_heads
        tokens = jnp.stack(
            [nn.Dense(self.features_out, name=f"project_{m}")(x) for m, x in enumerate(features)],
            axis=1,
        )  # [batch, M, d]

        def heads(name: str) -> jax.Array:
            return nn.DenseGeneral((self.num_heads, head_dim), name=name)(tokens)

        query, key, value = heads("query"), heads("key"), heads("value")
        scores = jnp.einsum("bqhc,bkhc->bhqk", query, key) * head_dim**-0.5
        others = ~jnp.eye(num_modalities, dtype=bool)
        key_mask = einops.rearrange(present, "b k -> b 1 1 k") & others  # [batch, 1, q, k]
        weights = common.masked_softmax(scores, key_mask, axis=-1)
        self.sow("intermediates", "weights", weights)
        attended = jnp.einsum("bhqk,bkhc->bqhc", weights, value)
        tokens = tokens + nn.DenseGeneral(self.features_out, axis=(-2, -1), name="out")(attended)
        pooled = common.masked_mean(tokens, einops.rearrange(present, "b m -> b m 1"), axis=1)
        return common.zero_all_masked(pooled, present)
