"""Encoder + linear head: the classifier that MAML adapts."""

from __future__ import annotations

import chex
import flax.linen as nn


class Classifier(nn.Module):
    """Any encoder followed by a linear head over ``num_classes`` (the episode's ways).

    Parameters are ``{"encoder": ..., "head": ...}`` so that head-only algorithms (ANIL)
    can split them by name. Call: ``inputs -> [batch, num_classes]`` logits.
    """

    encoder: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, inputs: chex.ArrayTree) -> chex.Array:
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 1
        ):
            raise ValueError(
                f"Classifier num_classes={self.num_classes!r} must be an int >= 1 (the ways)"
            )
        features = self.encoder(inputs)
        return nn.Dense(self.num_classes, name="head")(features)
