"""Adversarial modality alignment (Ganin & Lempitsky 2015, applied to modalities).

A :class:`ModalityDiscriminator` guesses from a shared embedding which modality produced it; the
embedding passes through :func:`gradient_reversal` first, so minimising the one loss
:func:`modality_adversarial_loss` trains the discriminator to tell the modalities apart and the
encoders (whose gradient is reversed and scaled) to make them indistinguishable, i.e. to make
the shared space modality-invariant. One optimizer, one loss, no alternating updates.
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def gradient_reversal(x: chex.ArrayTree, scale: float = 1.0) -> chex.ArrayTree:
    """Identity in the forward pass; multiplies the incoming gradient by ``-scale`` backward.

    Args:
      x: any array ``[...]`` (or pytree of arrays); returned unchanged.
      scale: non-negative float (static, not differentiated).
    """
    return x


def _reversal_fwd(x, scale):
    return x, None


def _reversal_bwd(scale, _, g):
    return (jax.tree.map(lambda t: -scale * t, g),)


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


class ModalityDiscriminator(nn.Module):
    """MLP ``[batch, D] -> [batch, num_modalities]`` logits of the modality of an embedding."""

    hidden: int = 64
    num_modalities: int = 2

    @nn.compact
    def __call__(self, z: chex.Array) -> jax.Array:
        z = nn.relu(nn.Dense(self.hidden)(z))
        z = nn.relu(nn.Dense(self.hidden)(z))
        return nn.Dense(self.num_modalities)(z)


def modality_adversarial_loss(
    discriminate,
    discriminator_params,
    embeddings: chex.Array,
    mask: chex.Array,
    *,
    scale: float = 1.0,
) -> tuple[jax.Array, dict]:
    """Discriminator cross-entropy on gradient-reversed embeddings.

    Args:
      discriminate: ``(params, z: [n, D]) -> [n, M]`` logits (e.g. ``ModalityDiscriminator.apply``).
      discriminator_params: its parameters.
      embeddings: ``[M, batch, D]`` per-modality embeddings.
      mask: ``[B, M]`` presence (batch, modalities, as in the data); masked entries are
        ignored.
      scale: gradient-reversal scale ``>= 0`` seen by the encoders.

    Returns:
      ``(loss, {"discriminator_loss", "discriminator_accuracy"})``: mean cross-entropy over
      the present entries. Its gradient trains the discriminator; the encoders receive
      ``-scale`` times the gradient, i.e. they are pushed to confuse it.
    """
    shape = tuple(np.shape(embeddings))
    if len(shape) != 3:
        raise ValueError(f"embeddings has shape {shape}; expected [modalities, batch, D]")
    if tuple(np.shape(mask)) != shape[1::-1]:
        raise ValueError(
            f"mask has shape {tuple(np.shape(mask))}; expected [B, M] = [batch, modalities] = "
            f"{list(shape[1::-1])}"
        )
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
        raise ValueError(f"scale={scale!r} must be a number >= 0")
    num_modalities, batch, dim = shape
    present = jnp.asarray(mask).T.astype(bool).reshape(-1)  # modality-major, as embeddings
    z = jnp.where(present[:, None], embeddings.reshape(-1, dim), 0.0)
    logits = discriminate(discriminator_params, gradient_reversal(z, float(scale)))
    labels = jnp.repeat(jnp.arange(num_modalities), batch)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    count = jnp.maximum(jnp.sum(present), 1)
    loss = jnp.sum(jnp.where(present, ce, 0.0)) / count
    accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) & present) / count
    return loss, {"discriminator_loss": loss, "discriminator_accuracy": accuracy}
