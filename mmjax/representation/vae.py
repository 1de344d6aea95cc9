"""Multimodal VAE: Gaussian experts combined by product (PoE), mixture (MoE) or both (MoPoE).

Each modality ``m`` has a diagonal Gaussian posterior ``q_m(z | x_m) = N(mean_m, exp(logvar_m))``,
stacked as ``means, logvars: [M, batch, D]``. A ``[M, batch]`` mask (1 = present) says which
experts exist for each sample; the same compiled function serves every subset:

* **PoE** (Wu & Goodman 2018): ``q(z | x) ∝ p(z) prod_m q_m(z | x_m)``; with a standard-normal
  prior expert, the precision is ``1 + sum_m mask_m / var_m`` and the mean is the
  precision-weighted mean. A masked expert contributes precision 0, so it changes nothing.
* **MoE** (Shi et al. 2019): ``q(z | x) = (1/|S|) sum_{m in S} q_m(z | x_m)`` over the present
  experts ``S``; a masked expert gets mixture weight 0.
* **MoPoE** (Sutter et al. 2021): a uniform mixture over the PoEs of every non-empty subset of
  the present experts; a subset holding a masked expert gets weight 0.

All three are returned in one form, ``(component_means, component_logvars, weights)`` with
``[K, batch, D]`` components and ``[K, batch]`` weights summing to 1 over ``K`` (PoE: ``K = 1``;
MoE: ``K = M``; MoPoE: ``K = 2^M - 1``), so one ELBO (:func:`elbo_terms`, stratified over the
components) trains them all.

Masked entries are removed with ``jnp.where`` before any arithmetic: NaN or inf there neither
propagate nor get a gradient. A concrete mask with a sample that has no expert raises
``ValueError``; under ``jit`` nothing can be raised, and such a sample gets the prior
``N(0, I)`` (PoE with the prior expert) or all-zero weights (never NaN).
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.representation.networks import Decoders, ModalityEncoders, presence, reconstruction_loss

COMBINATIONS = ("poe", "moe", "mopoe")


def check_experts(means: chex.Array, logvars: chex.Array, mask: chex.Array) -> jax.Array:
    """Checks ``means, logvars: [M, batch, D]`` and ``mask: [M, batch]``; returns a bool mask.

    Raises:
      ValueError: mismatched shapes, a mask of the wrong shape or with values other than 0/1,
        or (concrete masks) a sample with every expert masked.
    """
    mean_shape, logvar_shape = tuple(np.shape(means)), tuple(np.shape(logvars))
    if len(mean_shape) != 3:
        raise ValueError(f"means has shape {mean_shape}; expected [experts, batch, latent]")
    if logvar_shape != mean_shape:
        raise ValueError(f"logvars has shape {logvar_shape}; expected that of means {mean_shape}")
    mask_shape = tuple(np.shape(mask))
    if mask_shape != mean_shape[:2]:
        raise ValueError(
            f"mask has shape {mask_shape}; expected [experts, batch] = {mean_shape[:2]}"
        )
    if not isinstance(mask, jax.core.Tracer):
        values = np.asarray(mask)
        if values.dtype != np.bool_ and not np.all((values == 0) | (values == 1)):
            raise ValueError(f"mask must hold 0/1 or booleans; got values {np.unique(values)[:8]}")
        empty = ~np.any(values.astype(bool), axis=0)
        if np.any(empty):
            raise ValueError(
                f"mask of shape {mask_shape} has samples with every expert masked: "
                f"{np.flatnonzero(empty).tolist()[:10]}; each sample needs at least one expert"
            )
    mask = jnp.asarray(mask)
    return mask if mask.dtype == jnp.bool_ else mask != 0


def reparameterize(key: chex.PRNGKey, mean: chex.Array, logvar: chex.Array) -> jax.Array:
    """A sample ``mean + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn with ``key``.

    Args:
      key: PRNG key.
      mean, logvar: ``[..., D]`` (same shape).

    Returns:
      ``[..., D]``, differentiable in ``mean`` and ``logvar``.
    """
    if np.shape(mean) != np.shape(logvar):
        raise ValueError(
            f"logvar has shape {np.shape(logvar)}; expected that of mean {np.shape(mean)}"
        )
    eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_kl(mean: chex.Array, logvar: chex.Array) -> jax.Array:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` summed over the last axis: ``[..., D] -> [...]``.

    ``0.5 * sum(exp(logvar) + mean**2 - 1 - logvar)``.
    """
    if np.shape(mean) != np.shape(logvar):
        raise ValueError(
            f"logvar has shape {np.shape(logvar)}; expected that of mean {np.shape(mean)}"
        )
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def product_of_experts(
    means: chex.Array, logvars: chex.Array, mask: chex.Array, *, prior: bool = True
) -> tuple[jax.Array, jax.Array]:
    """Product of the present Gaussian experts (and of the ``N(0, I)`` prior expert).

    Args:
      means, logvars: ``[M, batch, D]``.
      mask: ``[M, batch]`` presence (bool or 0/1).
      prior: include the standard-normal prior expert.

    Returns:
      ``(mean, logvar)``, each ``[batch, D]``: precision ``T = [1] + sum_m mask_m exp(-logvar_m)``,
      mean ``sum_m mask_m exp(-logvar_m) mean_m / T``, logvar ``-log T``.
    """
    present = check_experts(means, logvars, mask)[..., None]  # [M, B, 1]
    means = jnp.where(present, means, 0.0)
    precisions = jnp.where(present, jnp.exp(-jnp.where(present, logvars, 0.0)), 0.0)
    total = jnp.sum(precisions, axis=0) + (1.0 if prior else 0.0)
    weighted = jnp.sum(precisions * means, axis=0)
    if not prior:  # all-masked samples under jit: fall back to N(0, I), never NaN
        empty = total <= 0
        total = jnp.where(empty, 1.0, total)
    return weighted / total, -jnp.log(total)


def mixture_of_experts(
    means: chex.Array, logvars: chex.Array, mask: chex.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Uniform mixture of the present experts.

    Returns:
      ``(means [M, batch, D], logvars [M, batch, D], weights [M, batch])``: the experts
      themselves (masked entries zeroed) and weights ``mask / sum(mask)`` per sample.
    """
    present = check_experts(means, logvars, mask)
    keep = present[..., None]
    weights = present.astype(jnp.result_type(means))
    weights = weights / jnp.maximum(jnp.sum(weights, axis=0, keepdims=True), 1.0)
    return jnp.where(keep, means, 0.0), jnp.where(keep, logvars, 0.0), weights


def subsets(num_experts: int) -> np.ndarray:
    """``[2^M - 1, M]`` 0/1 indicator rows of the non-empty subsets, smallest subsets first."""
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts={num_experts!r} must be an int >= 1")
    rows = [
        [1.0 if m in chosen else 0.0 for m in range(num_experts)]
        for size in range(1, num_experts + 1)
        for chosen in itertools.combinations(range(num_experts), size)
    ]
    return np.asarray(rows, np.float32)


def mopoe(
    means: chex.Array, logvars: chex.Array, mask: chex.Array, *, prior: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mixture of the products of every non-empty subset of the present experts.

    Args:
      means, logvars: ``[M, batch, D]``.
      mask: ``[M, batch]``.
      prior: include the prior expert in each subset's product (Sutter et al. do not).

    Returns:
      ``(means [S, batch, D], logvars [S, batch, D], weights [S, batch])`` with
      ``S = 2^M - 1`` (order of :func:`subsets`); a subset holding a masked expert has weight 0.
    """
    present = check_experts(means, logvars, mask)
    rows = jnp.asarray(subsets(means.shape[0]))  # [S, M]
    # subset s is available for sample b when all its members are present
    member = rows[:, :, None] > 0  # [S, M, 1]
    available = jnp.all(~member | present[None], axis=1)  # [S, B]
    # an unavailable subset gets no expert at all: its product is N(0, I) (finite) at weight 0
    sub_present = member & present[None] & available[:, None, :]  # [S, M, B]

    def one(subset_present):
        return _product(means, logvars, subset_present, prior)

    sub_means, sub_logvars = jax.vmap(one)(sub_present)
    weights = available.astype(jnp.result_type(means))
    weights = weights / jnp.maximum(jnp.sum(weights, axis=0, keepdims=True), 1.0)
    return sub_means, sub_logvars, weights


def _product(means, logvars, present, prior):
    keep = present[..., None]
    precisions = jnp.where(keep, jnp.exp(-jnp.where(keep, logvars, 0.0)), 0.0)
    total = jnp.sum(precisions, axis=0) + (1.0 if prior else 0.0)
    total = jnp.where(total <= 0, 1.0, total)
    return jnp.sum(precisions * jnp.where(keep, means, 0.0), axis=0) / total, -jnp.log(total)


def combine_experts(
    combination: str, means: chex.Array, logvars: chex.Array, mask: chex.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Joint posterior as mixture components ``([K, B, D], [K, B, D], weights [K, B])``.

    ``"poe"`` (with prior expert, ``K = 1``), ``"moe"`` (``K = M``) or ``"mopoe"``
    (``K = 2^M - 1``).
    """
    if combination == "poe":
        mean, logvar = product_of_experts(means, logvars, mask, prior=True)
        return mean[None], logvar[None], jnp.ones((1,) + mean.shape[:1], mean.dtype)
    if combination == "moe":
        return mixture_of_experts(means, logvars, mask)
    if combination == "mopoe":
        return mopoe(means, logvars, mask)
    raise ValueError(f"combination={combination!r} is not one of {COMBINATIONS}")


def posterior_mean(component_means: chex.Array, weights: chex.Array) -> jax.Array:
    """Mean ``[B, D]`` of the mixture ``sum_k weights_k * component_means_k``."""
    return jnp.sum(weights[..., None] * component_means, axis=0)


def sample_mixture(
    key: chex.PRNGKey,
    component_means: chex.Array,
    component_logvars: chex.Array,
    weights: chex.Array,
) -> jax.Array:
    """One sample ``[B, D]`` of the mixture per sample: a component by ``weights``, then
    :func:`reparameterize` (not differentiable in the component choice)."""
    choice_key, noise_key = jax.random.split(key)
    logits = jnp.where(weights > 0, jnp.log(jnp.where(weights > 0, weights, 1.0)), -jnp.inf)
    index = jax.random.categorical(choice_key, logits, axis=0)  # [B]
    pick = lambda x: jnp.take_along_axis(x, index[None, :, None], axis=0)[0]
    return reparameterize(noise_key, pick(component_means), pick(component_logvars))


def elbo_terms(
    key: chex.PRNGKey,
    component_means: chex.Array,
    component_logvars: chex.Array,
    weights: chex.Array,
    reconstruction_loss: Callable[[jax.Array], jax.Array],
) -> tuple[jax.Array, jax.Array]:
    """Stratified ELBO terms over the mixture components (one sample per component).

    Args:
      key: PRNG key for the reparameterised samples.
      component_means, component_logvars: ``[K, B, D]``.
      weights: ``[K, B]``.
      reconstruction_loss: ``z: [B, D] -> [B]`` negative log-likelihood of the sample's
        observed modalities.

    Returns:
      ``(reconstruction [B], kl [B])``: ``sum_k w_k nll(z_k)`` and ``sum_k w_k KL(q_k || p)``
      (for MoE/MoPoE the KL of the mixture is bounded above by this weighted sum).
    """
    keys = jax.random.split(key, component_means.shape[0])
    samples = jax.vmap(reparameterize)(keys, component_means, component_logvars)  # [K, B, D]
    nll = jax.vmap(reconstruction_loss)(samples)  # [K, B]
    kl = gaussian_kl(component_means, component_logvars)  # [K, B]
    return jnp.sum(weights * nll, axis=0), jnp.sum(weights * kl, axis=0)


class MultimodalVAE(nn.Module):
    """Multimodal VAE: one Gaussian expert per modality, combined by ``combination``.

    Attributes:
      features: encoder width.
      latent: latent dimension ``D``.
      combination: ``"poe"``, ``"moe"`` or ``"mopoe"``.
      image_shape, stroke_length, hidden: decoder settings (see :class:`Decoders`).

    Methods (through ``model.apply(params, ..., method=...)``):
      ``experts(inputs) -> (means, logvars)``, each ``[M, B, D]`` (log-variances clipped to
      ``[-8, 8]``); ``posterior(inputs) -> (means, logvars, weights)`` as
      :func:`combine_experts`; ``embed(inputs) -> [B, D]`` the posterior mean;
      ``decode(z) -> {"image": logits, "strokes": offsets}``.
    """

    features: int = 32
    latent: int = 32
    combination: str = "poe"
    image_shape: Sequence[int] = (28, 28, 1)
    stroke_length: int = 64
    hidden: int = 256
    stroke_kind: str = "conv"
    image_blocks: int = 4
    stroke_layers: Optional[int] = None

    def setup(self):
        if self.combination not in COMBINATIONS:
            raise ValueError(f"combination={self.combination!r} is not one of {COMBINATIONS}")
        self.encoders = ModalityEncoders(
            self.features, 2 * self.latent, self.stroke_kind, self.image_blocks, self.stroke_layers
        )
        self.decoders = Decoders(tuple(self.image_shape), self.stroke_length, self.hidden)

    def experts(self, inputs: dict) -> tuple[jax.Array, jax.Array]:
        """Per-modality ``(means, logvars)``, each ``[M, B, latent]``."""
        out = self.encoders(inputs)
        return out[..., : self.latent], jnp.clip(out[..., self.latent :], -8.0, 8.0)

    def posterior(self, inputs: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Joint posterior components ``([K, B, D], [K, B, D], weights [K, B])`` over the
        modalities present in ``inputs["mask"]``."""
        means, logvars = self.experts(inputs)
        return combine_experts(self.combination, means, logvars, presence(inputs))

    def embed(self, inputs: dict) -> jax.Array:
        """Posterior mean ``[B, latent]`` of the present modalities."""
        means, _, weights = self.posterior(inputs)
        return posterior_mean(means, weights)

    def decode(self, z: chex.Array) -> dict:
        """``z: [B, latent] -> {"image": [B, H, W, C] logits, "strokes": [B, L, 3]}``."""
        return self.decoders(z)

    def __call__(self, inputs: dict) -> tuple[tuple[jax.Array, jax.Array, jax.Array], dict]:
        means, logvars, weights = self.posterior(inputs)
        return (means, logvars, weights), self.decode(posterior_mean(means, weights))


def vae_loss(
    model: MultimodalVAE,
    params: chex.ArrayTree,
    inputs: dict,
    key: chex.PRNGKey,
    *,
    encoder_mask: Optional[chex.Array] = None,
    beta: float = 1.0,
    stroke_weight: float = 1.0,
) -> tuple[jax.Array, dict]:
    """Negative ELBO (mean over the batch), stratified over the posterior's components.

    Args:
      model: the VAE.
      params: its variables.
      inputs: ``{"image", "strokes", "mask": [B, M]}``; targets are the present modalities.
      key: PRNG key of the reparameterised samples.
      encoder_mask: optional ``[B, M]`` mask for the posterior (a subset of ``mask``).
      beta: KL weight.
      stroke_weight: weight of the stroke squared error.

    Returns:
      ``(loss, {"loss", "reconstruction", "kl"})``.
    """
    encoded = inputs if encoder_mask is None else dict(inputs, mask=encoder_mask)
    means, logvars, weights = model.apply(params, encoded, method="posterior")

    def nll(z):
        reconstructions = model.apply(params, z, method="decode")
        return reconstruction_loss(reconstructions, inputs, stroke_weight=stroke_weight)[0]

    reconstruction, kl = elbo_terms(key, means, logvars, weights, nll)
    reconstruction, kl = jnp.mean(reconstruction), jnp.mean(kl)
    loss = reconstruction + beta * kl
    return loss, {"loss": loss, "reconstruction": reconstruction, "kl": kl}
