"""Tensor fusion (Zadeh et al., 2017) and its low-rank factorisation (Liu et al., 2018)."""

from __future__ import annotations

import math
from typing import Sequence

import chex
import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion import common


def append_one(features: Sequence[chex.Array]) -> list[jax.Array]:
    """Appends a constant 1 to each ``[batch, D_m]`` array, giving ``[batch, D_m + 1]``.

    Applied to masked features (zero rows), a masked modality becomes ``[0, ..., 0, 1]``.
    """
    return [jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=-1) for x in features]


class TensorFusion(nn.Module):
    """Tensor Fusion Network layer: Dense of the outer product of ``[h_m; 1]`` over modalities.

    Each modality vector gets a 1 appended (a masked modality becomes ``[0, ..., 0, 1]``, so it
    contributes only through the constant), the outer product across all ``M`` modalities is
    flattened (size ``prod_m (D_m + 1)``, modality 0 slowest) and a Dense maps it to
    ``features_out``. No per-modality projection is applied first: project the inputs
    beforehand if the product is too large.

    Attributes:
      features_out: output width.
      max_tensor_size: refuse (``ValueError``) an outer product larger than this, instead of
        silently allocating a huge Dense kernel.

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]``; ``mask``: ``[B, M]``. Returns
      ``[batch, features_out]``. An all-masked sample raises in eager calls and gives zeros
      when traced.
    """

    features_out: int
    max_tensor_size: int = 1 << 20

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        common.check_width("TensorFusion", "features_out", self.features_out)
        features, present = common.prepare(features, mask)
        size = math.prod(x.shape[-1] + 1 for x in features)
        if size > self.max_tensor_size:
            raise ValueError(
                f"features with dimensions {[x.shape[-1] for x in features]} give an outer product "
                f"of size {size} > max_tensor_size={self.max_tensor_size}; project the features "
                "to smaller widths first (or raise max_tensor_size)."
            )
        common.check_input_width(
            self, "project", size, f"features of widths {[x.shape[-1] for x in features]}"
        )
        augmented = append_one(features)
        product = augmented[0]
        for z in augmented[1:]:
            product = einops.rearrange(jnp.einsum("bi,bj->bij", product, z), "b i j -> b (i j)")
        fused = nn.Dense(self.features_out, name="project")(product)
        return common.zero_all_masked(fused, present)


class LowRankTensorFusion(nn.Module):
    """Low-rank multimodal fusion: ``z = sum_r prod_m ([h_m; 1] W_m^(r))``.

    Each modality ``m`` has factors ``W_m`` shaped ``[rank, D_m + 1, features_out]``
    (parameter ``factor_m``); the factor outputs are multiplied elementwise across modalities
    and summed over the rank. This equals :class:`TensorFusion` whose weight tensor is the
    rank-``rank`` CP decomposition ``sum_r W_1^(r) x ... x W_M^(r)`` (per output unit); the
    bias of a TensorFusion is carried by the appended ones, so there is no separate bias.
    A masked modality becomes ``[0, ..., 0, 1]`` as in :class:`TensorFusion`.

    Attributes:
      features_out: output width.
      rank: number of rank-one terms.

    Call:
      ``features``: ``M`` arrays ``[batch, D_m]``; ``mask``: ``[B, M]``. Returns
      ``[batch, features_out]``. An all-masked sample raises in eager calls and gives zeros
      when traced.
    """

    features_out: int
    rank: int = 4

    @nn.compact
    def __call__(self, features: Sequence[chex.Array], mask: chex.Array) -> jax.Array:
        common.check_width("LowRankTensorFusion", "features_out", self.features_out)
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1; got {self.rank}.")
        features, present = common.prepare(features, mask)
        common.check_modality_params(self, "factor_", len(features))
        # Fan-in D_m + 1 per rank, variance scaled by rank**(-1/M): each rank-one term starts with
        # variance about 1/rank, so their sum starts at unit scale.
        init = nn.initializers.variance_scaling(
            self.rank ** (-1.0 / len(features)),
            "fan_in",
            "truncated_normal",
            in_axis=-2,
            out_axis=-1,
            batch_axis=(0,),
        )
        product = None
        for m, z in enumerate(append_one(features)):
            factor = self.param(
                f"factor_{m}", init, (self.rank, z.shape[-1], self.features_out), z.dtype
            )
            term = jnp.einsum("bi,rio->bro", z, factor)
            product = term if product is None else product * term
        fused = jnp.sum(product, axis=1)
        return common.zero_all_masked(fused, present)
