"""One small real-data fixture shared by the representation tests: image + stroke Omniglot."""

import jax
import jax.numpy as jnp
import pytest

from mmjax.data import omniglot_multimodal_splits
from mmjax.representation import make_objective, pretrain


@pytest.fixture(scope="session")
def multimodal_train():
    """48 meta-train classes (12 characters x 4 rotations) of ``{"image", "strokes", "mask"}``."""
    splits = omniglot_multimodal_splits()
    return jax.tree.map(lambda x: jnp.asarray(x[:48]), splits["train"])


@pytest.fixture(scope="session")
def multimodal_test():
    """12 meta-test classes."""
    splits = omniglot_multimodal_splits()
    return jax.tree.map(lambda x: jnp.asarray(x[:12]), splits["test"])


def window_means(history, key="loss", size=8):
    """Mean of ``key`` over the first and the last ``size`` steps."""
    values = [h[key] for h in history]
    return sum(values[:size]) / size, sum(values[-size:]) / size


SMALL = dict(features=8, latent=8, image_blocks=2, stroke_layers=1)
"""Encoder sizes of the short real-data runs (compile time dominates them on a CPU)."""


def short_pretrain(name, data, *, steps, batch_size, learning_rate, key="loss"):
    """Pretrains objective ``name`` at :data:`SMALL` sizes; ``key``'s first/last window means."""
    objective = make_objective(name, **SMALL)
    _, history = pretrain(
        objective,
        data,
        jax.random.PRNGKey(0),
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
    return window_means(history, key)
