"""Image + pen-stroke encoder: one encoder per modality, then a masked fusion layer.

Inputs are the episode pytrees of :func:`mmjax.data.omniglot_multimodal_splits`:
``{"image": [B, H, W, 1], "strokes": [B, L, 3], "mask": [B, 2]}`` (mask column 0 image,
column 1 strokes, 1 = present). Used as ``Classifier(encoder=MultimodalEncoder(...),
num_classes=ways)``, so every meta-learner works on it unchanged.

Design choices:

* **Masking before encoding.** Each modality's input is replaced by zeros
  (``jnp.where``) where it is masked, *before* its encoder. Conv-4's batch-statistics norm
  mixes the samples of a batch, so masking only the encoder output would still let a
  masked image move the other samples' features; zeroing the input makes the output and
  its gradient exactly independent of masked values (NaN included). The fusion layer then
  masks the features again (its own contract, :mod:`mmjax.fusion.common`).
* **One compiled function for every presence pattern.** The mask is data: image-only,
  stroke-only and bimodal inputs run the same code (no Python branch on the mask).
* **Late and hybrid fusion as features.** Those layers output logits; here they are built
  with ``num_classes=features`` and their output is treated as a ``features``-wide
  representation on which the classifier's linear head acts. Since the per-modality heads
  and the combination are linear, ``head(sum_s w_s W_s x_s) = sum_s w_s (head W_s) x_s``:
  the model *is* a late (hybrid) fusion of per-source linear classifiers whose weights
  are factored through a shared ``features``-wide layer, and the head stays the one
  ``ways``-way layer that MAML and ANIL adapt.
"""

from __future__ import annotations

from typing import Any, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.modality import MODALITIES  # column m of the mask = fusion feature m
from mmjax.fusion.registry import FUSION_METHODS, make_fusion
from mmjax.nn.conv import Conv4
from mmjax.nn.sequence import StrokeEncoder
from mmjax.validation import check_float_dtype, is_concrete

LOGIT_FUSIONS = ("late", "hybrid")
"""Fusion layers whose output is logits; built with ``num_classes=features``."""


def fusion_kwargs(name: str, features: int, num_heads: int = 4) -> dict[str, Any]:
    """Constructor arguments giving fusion layer ``name`` an output width of ``features``."""
    if name not in FUSION_METHODS:
        make_fusion(name)  # raises ValueError naming the valid methods
    if name in LOGIT_FUSIONS:
        return {"num_classes": features}
    if name == "cross_attention":
        return {"features_out": features, "num_heads": num_heads}
    return {"features_out": features}


def check_inputs(inputs: Any) -> None:
    """Checks the static structure of a multimodal batch (see the module docstring).

    Raises:
      ValueError: ``inputs`` is not a dict with keys image, strokes and mask, the shapes
        disagree with ``image [B, H, W, C]``, ``strokes [B, L, 3]``, ``mask [B, 2]``, or a
        concrete mask (eager call) holds values other than 0/1. A traced mask (inside
        ``jit``) cannot be read: there any nonzero value counts as present.
      TypeError: ``image`` or ``strokes`` is not floating point (e.g. ``uint8`` images).
    """
    if not isinstance(inputs, dict) or set(inputs) != {*MODALITIES, "mask"}:
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"inputs must be a dict with keys ['image', 'mask', 'strokes']; got {got}")
    image, strokes, mask = (jnp.shape(inputs[k]) for k in ("image", "strokes", "mask"))
    if len(image) != 4:
        raise ValueError(f"inputs['image'] has shape {image}; expected [batch, H, W, C]")
    batch = image[0]
    if len(strokes) != 3 or strokes[0] != batch or strokes[-1] != 3:
        raise ValueError(
            f"inputs['strokes'] has shape {strokes}; expected [batch={batch}, length, 3]"
        )
    if mask != (batch, len(MODALITIES)):
        raise ValueError(
            f"inputs['mask'] has shape {mask}; expected [batch, modalities] = "
            f"({batch}, {len(MODALITIES)})"
        )
    for name in MODALITIES:
        check_float_dtype(inputs[name], f"inputs[{name!r}]")
    if is_concrete(inputs["mask"]):
        values = np.asarray(inputs["mask"])
        if values.dtype != np.bool_ and not np.all((values == 0) | (values == 1)):
            raise ValueError(
                f"inputs['mask'] must hold only 0/1 (or booleans), 1 = modality present; got "
                f"values {np.unique(values[(values != 0) & (values != 1)])[:8].tolist()}"
            )


class MultimodalEncoder(nn.Module):
    """Per-modality encoders, then a fusion layer from :mod:`mmjax.fusion`.

    Attributes:
      fusion: a name in :data:`mmjax.fusion.FUSION_METHODS`.
      features: output width ``D`` (the fusion layer's output width).
      image_encoder: ``[B, H, W, C] -> [B, D_image]``; default ``Conv4(features)``.
      stroke_encoder: ``[B, L, 3] -> [B, D_strokes]``; default ``StrokeEncoder(features)``.
      num_heads: attention heads of ``"cross_attention"``.

    Call:
      ``inputs``: ``{"image": [B, H, W, C], "strokes": [B, L, 3], "mask": [B, 2]}`` ->
      ``[B, features]``. A masked modality has no influence on the output.
    """

    fusion: str = "concat"
    features: int = 64
    image_encoder: Optional[nn.Module] = None
    stroke_encoder: Optional[nn.Module] = None
    num_heads: int = 4

    @nn.compact
    def __call__(self, inputs: dict[str, chex.Array]) -> jax.Array:
        check_inputs(inputs)
        mask = jnp.asarray(inputs["mask"])
        present = mask if mask.dtype == jnp.bool_ else mask != 0  # [B, M]
        image_encoder = self.image_encoder or Conv4(features=self.features, name="image")
        stroke_encoder = self.stroke_encoder or StrokeEncoder(
            features=self.features, name="strokes"
        )
        encoded = []
        for m, (name, encoder) in enumerate(zip(MODALITIES, (image_encoder, stroke_encoder))):
            x = jnp.asarray(inputs[name])
            keep = present[:, m].reshape((-1,) + (1,) * (x.ndim - 1))
            encoded.append(encoder(jnp.where(keep, x, 0)))
        layer = make_fusion(
            self.fusion, **fusion_kwargs(self.fusion, self.features, self.num_heads)
        )
        return layer(encoded, mask)
