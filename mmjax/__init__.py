"""mmjax: multimodal few-shot meta-learning in JAX.

The names a user calls, re-exported from the subpackages: configs (``get_config``), episodes
(``sample_episodes``), models (``Conv4``, ``MultimodalEncoder``, ``make_fusion``), learners
(``make_learner``), the meta-training step, evaluation. Everything else is reachable by module:
``mmjax.data`` (Omniglot images and pen strokes, on-device episodes), ``mmjax.nn`` (encoders),
``mmjax.fusion`` (fusion layers with ``[B, M]`` modality masks), ``mmjax.meta`` (MAML and the
other meta-learners), ``mmjax.train`` (trainer, evaluation, checkpoints),
``mmjax.representation`` (multimodal autoencoder, VAE, contrastive, CCA, adversarial alignment)
and ``mmjax.configs``.
"""

from mmjax import configs, data, fusion, meta, nn, representation, train
from mmjax.configs import apply_overrides, available_configs, get_config
from mmjax.data import Episode, omniglot_splits, sample_episode, sample_episodes
from mmjax.fusion import make_fusion
from mmjax.meta import (
    MetaLearner,
    adapt,
    available_learners,
    classification_loss,
    make_learner,
    make_step,
)
from mmjax.nn import MLP, Classifier, Conv4, MultimodalEncoder, StrokeEncoder
from mmjax.train import confidence_interval, evaluate_checkpoint, evaluate_learner

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Classifier",
    "Conv4",
    "Episode",
    "MetaLearner",
    "MultimodalEncoder",
    "StrokeEncoder",
    "adapt",
    "apply_overrides",
    "available_learners",
    "available_configs",
    "classification_loss",
    "configs",
    "confidence_interval",
    "data",
    "evaluate_checkpoint",
    "evaluate_learner",
    "fusion",
    "get_config",
    "make_fusion",
    "make_learner",
    "make_step",
    "meta",
    "nn",
    "omniglot_splits",
    "representation",
    "sample_episode",
    "sample_episodes",
    "train",
]
