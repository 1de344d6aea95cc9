"""Pretraining a shared image + stroke representation with any of the objectives.

An :class:`Objective` is ``(name, init, loss, embed)`` over a parameter pytree
``{"model": flax variables, ...}``:

* ``init(key, example_inputs) -> params``;
* ``loss(params, batch, key) -> (loss, metrics)``, a pure function of its arguments;
* ``embed(params, inputs) -> [B, D]``, the shared representation of a multimodal batch
  (any subset of modalities present, through ``inputs["mask"]``).

:func:`make_objective` builds them by name (:data:`PRETRAIN_OBJECTIVES`); :func:`make_pretrain_step`
is one jitted optax step that samples its batch of drawings from the meta-train classes on
device (:func:`sample_batch`); :func:`pretrain` runs it for a number of steps.
"""

from __future__ import annotations

import difflib
from typing import Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import optax

from mmjax.data.episodes import classes_and_examples
from mmjax.data.modality import check_rate, dropout_mask
from mmjax.representation.adversarial import ModalityDiscriminator, modality_adversarial_loss
from mmjax.representation.autoencoder import MultimodalAutoencoder, autoencoder_loss
from mmjax.representation.cca import cca_loss
from mmjax.representation.contrastive import info_nce, init_log_temperature, l2_normalize
from mmjax.representation.networks import MultimodalEmbedding, presence
from mmjax.representation.vae import MultimodalVAE, vae_loss

PRETRAIN_OBJECTIVES = (
    "none",
    "autoencoder",
    "vae_poe",
    "vae_moe",
    "vae_mopoe",
    "contrastive",
    "dcca",
    "adversarial",
)
"""``"none"``: the randomly initialised encoder (no pretraining); ``"adversarial"``:
contrastive + a modality discriminator behind a gradient-reversal layer."""

Params = chex.ArrayTree


class Objective(NamedTuple):
    """A representation-learning objective (see the module docstring)."""

    name: str
    init: Callable[[chex.PRNGKey, dict], Params]
    loss: Callable[[Params, dict, chex.PRNGKey], tuple[jax.Array, dict]]
    embed: Callable[[Params, dict], jax.Array]
    model: object


def check_objective(name: str) -> None:
    """Raises ``ValueError`` naming the valid objectives (and the closest) for an unknown one."""
    if name not in PRETRAIN_OBJECTIVES:
        close = difflib.get_close_matches(str(name), PRETRAIN_OBJECTIVES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"objective={name!r} is not one of {PRETRAIN_OBJECTIVES}{hint}")


def make_objective(
    name: str,
    *,
    features: int = 32,
    latent: int = 32,
    modality_dropout: float = 0.25,
    beta: float = 1.0,
    stroke_weight: float = 20.0,
    cca_reg: float = 1e-3,
    cca_components: Optional[int] = None,
    temperature: float = 0.1,
    adversarial_weight: float = 1.0,
    reversal_scale: float = 1.0,
    fusion: str = "concat",
    image_shape: tuple = (28, 28, 1),
    stroke_length: int = 64,
    image_blocks: int = 4,
    stroke_layers: Optional[int] = None,
) -> Objective:
    """Builds objective ``name`` (one of :data:`PRETRAIN_OBJECTIVES`).

    Args:
      name: the objective.
      features: encoder width (Conv-4 filters, stroke-encoder features).
      latent: dimension of the shared representation.
      modality_dropout: rate of :func:`mmjax.data.modality.dropout_mask` on the encoder mask of
        the autoencoder and the VAEs (targets keep every present modality), which trains
        cross-modal reconstruction.
      beta: KL weight of the VAEs.
      stroke_weight: weight of the stroke squared error against the image Bernoulli NLL.
      cca_reg, cca_components: ridge and number of correlations of deep CCA.
      temperature: initial InfoNCE temperature (learned).
      adversarial_weight: weight of the discriminator loss (``"adversarial"``).
      reversal_scale: gradient-reversal scale seen by the encoders (``"adversarial"``).
      fusion: fusion layer of the autoencoder's latent.
      image_shape, stroke_length: sizes of the decoded modalities.
      image_blocks, stroke_layers: depth of the image (Conv-4 blocks) and stroke encoders.
    """
    check_objective(name)
    check_rate(modality_dropout)
    encoder = dict(image_blocks=image_blocks, stroke_layers=stroke_layers)
    decoder = dict(encoder, image_shape=tuple(image_shape), stroke_length=stroke_length)

    if name == "autoencoder":
        model = MultimodalAutoencoder(features, latent, fusion=fusion, **decoder)
    elif name.startswith("vae_"):
        model = MultimodalVAE(features, latent, combination=name[4:], **decoder)
    else:
        model = MultimodalEmbedding(
            features,
            latent,
            normalize=name in ("contrastive", "adversarial"),
            image_blocks=image_blocks,
            stroke_layers=stroke_layers,
        )
    discriminator = ModalityDiscriminator(hidden=2 * latent)

    def init(key: chex.PRNGKey, example_inputs: dict) -> Params:
        model_key, discriminator_key = jax.random.split(key)
        params = {"model": model.init(model_key, example_inputs)}
        if name in ("contrastive", "adversarial"):
            params["log_temperature"] = init_log_temperature(temperature)
        if name == "adversarial":
            params["discriminator"] = discriminator.init(
                discriminator_key, jnp.zeros((1, latent), jnp.float32)
            )
        return params

    def embed(params: Params, inputs: dict) -> jax.Array:
        return model.apply(params["model"], inputs, method="embed")

    def loss(params: Params, batch: dict, key: chex.PRNGKey) -> tuple[jax.Array, dict]:
        dropout_key, sample_key = jax.random.split(key)
        if name == "none":
            zero = jnp.zeros((), jnp.float32)
            return zero, {"loss": zero}
        if name == "autoencoder":
            encoder_mask = dropout_mask(dropout_key, batch["mask"], rate=modality_dropout)
            return autoencoder_loss(
                model,
                params["model"],
                batch,
                encoder_mask=encoder_mask,
                stroke_weight=stroke_weight,
            )
        if name.startswith("vae_"):
            encoder_mask = dropout_mask(dropout_key, batch["mask"], rate=modality_dropout)
            return vae_loss(
                model,
                params["model"],
                batch,
                sample_key,
                encoder_mask=encoder_mask,
                beta=beta,
                stroke_weight=stroke_weight,
            )
        z = model.apply(params["model"], batch)  # [M, B, D]
        mask = presence(batch)
        both = mask[0] & mask[1]
        if name == "dcca":
            return cca_loss(z[0], z[1], reg=cca_reg, num_components=cca_components)
        total, metrics = info_nce(z[0], z[1], params["log_temperature"], valid=both)
        if name == "adversarial":
            adversarial, extra = modality_adversarial_loss(
                discriminator.apply,
                params["discriminator"],
                l2_normalize(z),
                mask.T,  # [B, M]
                scale=reversal_scale,
            )
            metrics = dict(metrics, contrastive=total, **extra)
            total = total + adversarial_weight * adversarial
            metrics["loss"] = total
        return total, metrics

    return Objective(name, init, loss, embed, model)


def sample_batch(key: chex.PRNGKey, data: chex.ArrayTree, batch_size: int) -> chex.ArrayTree:
    """``batch_size`` drawings drawn uniformly (with replacement) from class-grouped ``data``.

    Args:
      key: PRNG key.
      data: pytree with leaves ``[classes, examples, ...]`` (e.g. a split of
        :func:`mmjax.data.omniglot_multimodal_splits`).
      batch_size: number of drawings.

    Returns:
      The pytree with leaves ``[batch_size, ...]``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 2")
    num_classes, num_examples = classes_and_examples(data)
    class_key, example_key = jax.random.split(key)
    classes = jax.random.randint(class_key, (batch_size,), 0, num_classes)
    examples = jax.random.randint(example_key, (batch_size,), 0, num_examples)
    return jax.tree.map(lambda x: x[classes, examples], data)


def make_pretrain_step(
    objective: Objective, optimizer: optax.GradientTransformation, *, batch_size: int
) -> Callable:
    """One jitted step ``(params, opt_state, data, key) -> (params, opt_state, metrics)``.

    The batch is sampled from ``data`` (class-grouped meta-train arrays) inside the step.
    """

    @jax.jit
    def step(params, opt_state, data, key):
        batch_key, loss_key = jax.random.split(key)
        batch = sample_batch(batch_key, data, batch_size)
        grads, metrics = jax.grad(objective.loss, has_aux=True)(params, batch, loss_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def pretrain(
    objective: Objective,
    data: chex.ArrayTree,
    key: chex.PRNGKey,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    params: Optional[Params] = None,
) -> tuple[Params, list[dict]]:
    """Initialises (unless ``params`` is given) and pretrains ``objective`` on ``data``.

    Args:
      objective: from :func:`make_objective`.
      data: class-grouped meta-train pytree ``{"image": [C, E, H, W, 1],
        "strokes": [C, E, L, 3], "mask": [C, E, 2]}``.
      key: PRNG key (initialisation, then one split per step).
      steps: optimizer steps (0 for the ``"none"`` objective or an evaluation of the init).
      batch_size: drawings per step.
      learning_rate: Adam step size.
      params: start from these parameters instead of a fresh initialisation.

    Returns:
      ``(params, history)``: the parameters and one metrics dict (floats) per step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be an int >= 0")
    init_key, key = jax.random.split(key)
    if params is None:
        params = jax.jit(objective.init)(init_key, sample_batch(init_key, data, batch_size))
    if objective.name == "none" or steps == 0:
        return params, []
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    step = make_pretrain_step(objective, optimizer, batch_size=batch_size)
    history = []
    for step_key in jax.random.split(key, steps):
        params, opt_state, metrics = step(params, opt_state, data, step_key)
        history.append(metrics)
    history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]
    return params, history
