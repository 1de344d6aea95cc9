"""Per-modality encoders and decoders shared by the representation objectives.

Inputs are the multimodal batches of :func:`mmjax.data.omniglot_multimodal_splits`:
``{"image": [B, H, W, 1], "strokes": [B, L, 3], "mask": [B, 2]}`` (mask column 0 image,
column 1 strokes). Encoders zero a masked modality's input before encoding (as
:class:`mmjax.nn.MultimodalEncoder` does), so its values cannot leak.

* :class:`ModalityEncoders`: ``Conv4`` for images and ``StrokeEncoder`` for strokes, each
  followed by a linear layer to ``outputs`` -> ``[M, B, outputs]``.
* :class:`MultimodalEmbedding`: the per-modality embeddings ``[M, B, D]`` (contrastive, CCA,
  adversarial) and a masked mean of them as the shared embedding.
* :class:`ImageDecoder` (Bernoulli logits) and :class:`StrokeDecoder` (offsets), small MLPs.
* :func:`reconstruction_loss`: summed per-modality negative log-likelihoods over the
  modalities present in the target.
"""

from __future__ import annotations

from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmjax.data.modality import MODALITIES
from mmjax.nn.conv import Conv4
from mmjax.nn.multimodal import check_inputs
from mmjax.nn.sequence import StrokeEncoder


def presence(inputs: dict) -> jax.Array:
    """``[M, B]`` bool presence from ``inputs["mask"]: [B, M]``."""
    mask = jnp.asarray(inputs["mask"])
    return (mask if mask.dtype == jnp.bool_ else mask != 0).T


class ModalityEncoders(nn.Module):
    """Image and stroke encoders, each with a linear head to ``outputs`` features.

    Call: ``inputs`` (see the module docstring) -> ``[M, B, outputs]``; a masked row is the
    encoding of a zero input (to be ignored by the caller through the mask).
    ``image_blocks`` (Conv-4 blocks) and ``stroke_layers`` (stroke-encoder layers, ``None``:
    its default) size the encoders.
    """

    features: int = 32
    outputs: int = 32
    stroke_kind: str = "conv"
    image_blocks: int = 4
    stroke_layers: Optional[int] = None

    @nn.compact
    def __call__(self, inputs: dict) -> jax.Array:
        check_inputs(inputs)
        present = presence(inputs)
        encoders = (
            Conv4(features=self.features, num_blocks=self.image_blocks, name="image"),
            StrokeEncoder(
                features=self.features,
                kind=self.stroke_kind,
                num_layers=self.stroke_layers,
                name="strokes",
            ),
        )
        encoded = []
        for m, (name, encoder) in enumerate(zip(MODALITIES, encoders)):
            x = jnp.asarray(inputs[name])
            keep = present[m].reshape((-1,) + (1,) * (x.ndim - 1))
            h = encoder(jnp.where(keep, x, 0))
            encoded.append(nn.Dense(self.outputs, name=f"{name}_head")(h))
        return jnp.stack(encoded)


class MultimodalEmbedding(nn.Module):
    """Per-modality embeddings in one shared space.

    Call: ``inputs -> [M, B, latent]``. ``embed(inputs) -> [B, latent]``: the mean of the
    present modalities' embeddings (L2-normalised first when ``normalize``).
    """

    features: int = 32
    latent: int = 32
    normalize: bool = False
    stroke_kind: str = "conv"
    image_blocks: int = 4
    stroke_layers: Optional[int] = None

    def setup(self):
        self.encoders = ModalityEncoders(
            self.features, self.latent, self.stroke_kind, self.image_blocks, self.stroke_layers
        )

    def __call__(self, inputs: dict) -> jax.Array:
        return self.encoders(inputs)

    def embed(self, inputs: dict) -> jax.Array:
        """Shared embedding ``[B, latent]``: the mean over the modalities present in
        ``inputs["mask"]: [B, M]`` of their (normalised) embeddings."""
        z = self.encoders(inputs)
        if self.normalize:
            z = z * jax.lax.rsqrt(jnp.sum(z**2, axis=-1, keepdims=True) + 1e-12)
        keep = presence(inputs)[..., None]
        total = jnp.sum(jnp.where(keep, z, 0.0), axis=0)
        return total / jnp.maximum(jnp.sum(keep, axis=0), 1).astype(z.dtype)


class ImageDecoder(nn.Module):
    """MLP ``[B, latent] -> [B, H, W, C]`` Bernoulli logits."""

    shape: Sequence[int] = (28, 28, 1)
    hidden: int = 256

    @nn.compact
    def __call__(self, z: chex.Array) -> jax.Array:
        size = 1
        for s in self.shape:
            size *= s
        h = nn.relu(nn.Dense(self.hidden)(z))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(size)(h).reshape((z.shape[0],) + tuple(self.shape))


class StrokeDecoder(nn.Module):
    """MLP ``[B, latent] -> [B, length, 3]`` (dx, dy, pen_lift) regression outputs."""

    length: int = 64
    hidden: int = 256

    @nn.compact
    def __call__(self, z: chex.Array) -> jax.Array:
        h = nn.relu(nn.Dense(self.hidden)(z))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.length * 3)(h).reshape(z.shape[0], self.length, 3)


class Decoders(nn.Module):
    """Both decoders: ``z: [B, latent] -> {"image": logits, "strokes": offsets}``."""

    image_shape: Sequence[int] = (28, 28, 1)
    stroke_length: int = 64
    hidden: int = 256

    @nn.compact
    def __call__(self, z: chex.Array) -> dict:
        return {
            "image": ImageDecoder(tuple(self.image_shape), self.hidden, name="image")(z),
            "strokes": StrokeDecoder(self.stroke_length, self.hidden, name="strokes")(z),
        }


def bernoulli_nll(logits: chex.Array, targets: chex.Array) -> jax.Array:
    """``[B, ...] -> [B]`` summed sigmoid cross-entropy (targets in [0, 1])."""
    ce = optax.sigmoid_binary_cross_entropy(logits, targets)
    return jnp.sum(ce.reshape(ce.shape[0], -1), axis=-1)


def squared_error(predictions: chex.Array, targets: chex.Array) -> jax.Array:
    """``[B, ...] -> [B]`` summed squared error (Gaussian NLL up to constants)."""
    se = jnp.square(predictions - targets)
    return jnp.sum(se.reshape(se.shape[0], -1), axis=-1)


def reconstruction_loss(
    reconstructions: dict, inputs: dict, *, stroke_weight: float = 1.0
) -> tuple[jax.Array, dict]:
    """Per-sample loss ``[B]``: Bernoulli NLL of the image plus ``stroke_weight`` times the
    squared error of the strokes, each counted only where ``inputs["mask"]`` has it.

    Returns:
      ``(loss [B], {"image": [B], "strokes": [B]})`` (the unmasked per-modality terms).
    """
    present = presence(inputs)
    image = bernoulli_nll(
        reconstructions["image"], jnp.where(present[0][:, None, None, None], inputs["image"], 0.0)
    )
    strokes = squared_error(
        reconstructions["strokes"],
        jnp.where(present[1][:, None, None], inputs["strokes"], 0.0),
    )
    total = jnp.where(present[0], image, 0.0) + stroke_weight * jnp.where(present[1], strokes, 0.0)
    return total, {"image": image, "strokes": strokes}
