"""Multimodal representation learning: autoencoder, VAE (PoE / MoE / MoPoE), contrastive
(InfoNCE), CCA (linear and deep), adversarial modality alignment; pretraining on meta-train
classes and few-shot / cross-modal evaluation of the frozen representation.

Re-exported here: the models, the objectives (by name, :data:`PRETRAIN_OBJECTIVES`), their
losses, pretraining and evaluation. The building blocks (experts, KL terms, CCA solves,
normalisation, decoders) live in their modules.
"""

from mmjax.representation.adversarial import ModalityDiscriminator, modality_adversarial_loss
from mmjax.representation.autoencoder import MultimodalAutoencoder, autoencoder_loss
from mmjax.representation.cca import LinearCCA, cca_loss
from mmjax.representation.contrastive import info_nce
from mmjax.representation.evaluate import (
    cross_modal_retrieval,
    embed_drawings,
    fit_cca_on_drawings,
    protonet_accuracies,
    recall_at_k,
)
from mmjax.representation.networks import MultimodalEmbedding
from mmjax.representation.pretrain import (
    PRETRAIN_OBJECTIVES,
    Objective,
    make_objective,
    make_pretrain_step,
    pretrain,
)
from mmjax.representation.vae import MultimodalVAE, vae_loss

__all__ = [
    "PRETRAIN_OBJECTIVES",
    "LinearCCA",
    "ModalityDiscriminator",
    "MultimodalAutoencoder",
    "MultimodalEmbedding",
    "MultimodalVAE",
    "Objective",
    "autoencoder_loss",
    "cca_loss",
    "cross_modal_retrieval",
    "embed_drawings",
    "fit_cca_on_drawings",
    "info_nce",
    "make_objective",
    "make_pretrain_step",
    "modality_adversarial_loss",
    "pretrain",
    "protonet_accuracies",
    "recall_at_k",
    "vae_loss",
]
