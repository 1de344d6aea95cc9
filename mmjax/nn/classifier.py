"""Encoder + linear head: the classifier that MAML adapts."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

# Compute dtypes of `Classifier` (``config.model.dtype``); parameters stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16")
PARAM_DTYPES = ("float32",)


class Classifier(nn.Module):
    """Any encoder followed by a linear head over ``num_classes`` (the episode's ways).

    Parameters are ``{"encoder": ..., "head": ...}`` so that head-only algorithms (ANIL)
    can split them by name. Call: ``inputs -> [batch, num_classes]`` logits.

    ``dtype="bfloat16"`` (mixed precision, ``config.model.dtype``): the floating inputs are
    cast to bfloat16, so `Conv2D` / `BatchStatNorm` (which cast their parameters to the
    input's dtype) run activations and matmuls in bfloat16, with batch-norm statistics in
    float32 (`mmjax.nn.batch_norm`); the head runs in bfloat16 and the logits are returned
    in float32, so the loss is float32. Parameters (``param_dtype``) stay float32: the
    meta-learner's master parameters, the optimizer state and the inner-loop updates are
    float32, and gradients arrive in float32 through the casts. Encoders built on
    ``nn.Dense`` (MLP, stroke encoders) promote back to float32 inside. ``"float32"`` (the
    default) casts nothing.
    """

    encoder: nn.Module
    num_classes: int
    dtype: str = "float32"
    param_dtype: str = "float32"

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
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"model dtype={self.dtype!r} is not one of {COMPUTE_DTYPES}")
        if self.param_dtype not in PARAM_DTYPES:
            raise ValueError(
                f"model param_dtype={self.param_dtype!r} is not one of {PARAM_DTYPES}: the "
                "meta-parameters, optimizer state and inner-loop updates stay float32 "
                "(set model.dtype='bfloat16' for bfloat16 compute)"
            )
        if self.dtype == "float32":
            return nn.Dense(self.num_classes, name="head")(self.encoder(inputs))
        compute = jnp.dtype(self.dtype)
        inputs = jax.tree.map(
            lambda x: x.astype(compute) if jnp.issubdtype(x.dtype, jnp.floating) else x, inputs
        )
        features = self.encoder(inputs)
        head = nn.Dense(self.num_classes, dtype=compute, param_dtype=jnp.float32, name="head")
        return head(features).astype(jnp.float32)
