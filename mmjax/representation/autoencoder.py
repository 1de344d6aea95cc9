"""Multimodal autoencoder: per-modality encoders, a fused latent, per-modality decoders.

``x_image, x_strokes -> (Conv4, StrokeEncoder) -> fusion layer (any of mmjax.fusion, with the
[B, M] mask) -> z: [B, latent] -> ImageDecoder (Bernoulli logits), StrokeDecoder (offsets)``.
The loss is the sum of the reconstruction losses of the modalities present in the target
(Bernoulli NLL for the image, squared error for the strokes). Encoding with a modality masked
out (modality dropout, :func:`autoencoder_loss` ``encoder_mask``) while reconstructing both
trains cross-modal generation, as in Ngiam et al. (2011).
"""

from __future__ import annotations

from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.registry import make_fusion
from mmjax.nn.multimodal import fusion_kwargs
from mmjax.representation.networks import Decoders, ModalityEncoders, presence, reconstruction_loss


class MultimodalAutoencoder(nn.Module):
    """Autoencoder with a fused latent.

    Attributes:
      features: encoder width (Conv-4 filters, stroke-encoder features).
      latent: width of the fused latent.
      fusion: a name in :data:`mmjax.fusion.FUSION_METHODS`.
      image_shape: ``(H, W, C)`` of the decoded image.
      stroke_length: decoded sequence length.
      hidden: decoder MLP width.

    Call: ``inputs -> (z [B, latent], {"image": [B, H, W, C] logits, "strokes": [B, L, 3]})``.
    ``embed(inputs) -> z``; ``decode(z) -> reconstructions``.
    """

    features: int = 32
    latent: int = 32
    fusion: str = "concat"
    image_shape: Sequence[int] = (28, 28, 1)
    stroke_length: int = 64
    hidden: int = 256
    stroke_kind: str = "conv"
    image_blocks: int = 4
    stroke_layers: Optional[int] = None

    def setup(self):
        self.encoders = ModalityEncoders(
            self.features, self.features, self.stroke_kind, self.image_blocks, self.stroke_layers
        )
        self.fuse = make_fusion(self.fusion, **fusion_kwargs(self.fusion, self.latent))
        self.decoders = Decoders(tuple(self.image_shape), self.stroke_length, self.hidden)

    def embed(self, inputs: dict) -> jax.Array:
        """Fused latent ``[B, latent]`` of the modalities present in ``inputs["mask"]: [B, M]``."""
        encoded = self.encoders(inputs)
        return self.fuse(list(encoded), presence(inputs).T)  # [B, M]

    def decode(self, z: chex.Array) -> dict:
        """``z: [B, latent] -> {"image": [B, H, W, C] logits, "strokes": [B, L, 3]}``."""
        return self.decoders(z)

    def __call__(self, inputs: dict) -> tuple[jax.Array, dict]:
        z = self.embed(inputs)
        return z, self.decode(z)


def autoencoder_loss(
    model: MultimodalAutoencoder,
    params: chex.ArrayTree,
    inputs: dict,
    *,
    encoder_mask: Optional[chex.Array] = None,
    stroke_weight: float = 1.0,
) -> tuple[jax.Array, dict]:
    """Mean summed reconstruction loss of a batch.

    Args:
      model: the autoencoder.
      params: its variables.
      inputs: ``{"image", "strokes", "mask": [B, M]}``; the targets are the modalities present
        in ``mask``.
      encoder_mask: optional ``[B, M]`` mask seen by the encoder instead (e.g. after modality
        dropout); must be present only where ``mask`` is.
      stroke_weight: weight of the stroke squared error.

    Returns:
      ``(loss, {"loss", "image_nll", "stroke_se"})``.
    """
    encoded = inputs if encoder_mask is None else dict(inputs, mask=encoder_mask)
    _, reconstructions = model.apply(params, encoded)
    per_sample, parts = reconstruction_loss(reconstructions, inputs, stroke_weight=stroke_weight)
    loss = jnp.mean(per_sample)
    present = presence(inputs)
    image = jnp.sum(jnp.where(present[0], parts["image"], 0)) / jnp.maximum(present[0].sum(), 1)
    strokes = jnp.sum(jnp.where(present[1], parts["strokes"], 0)) / jnp.maximum(present[1].sum(), 1)
    return loss, {"loss": loss, "image_nll": image, "stroke_se": strokes}
