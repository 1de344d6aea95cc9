"""Multi-layer perceptron encoder."""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last).

    Call: ``x: [batch, ..., in_features] -> [batch, ..., hidden_sizes[-1]]``.
    """

    hidden_sizes: Sequence[int]
    activation: Callable[[chex.Array], chex.Array] = nn.relu
    activate_final: bool = False

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        if not self.hidden_sizes:
            raise ValueError("MLP hidden_sizes must name at least one layer size")
        for i, size in enumerate(self.hidden_sizes):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(
                    f"MLP hidden_sizes[{i}]={size!r} must be an int >= 1 "
                    f"(hidden_sizes={tuple(self.hidden_sizes)})"
                )
        if jnp.ndim(x) < 1:
            raise ValueError(f"MLP input x has shape {jnp.shape(x)}; expected [..., in_features]")
        for i, size in enumerate(self.hidden_sizes):
            x = nn.Dense(size)(x)
            if i < len(self.hidden_sizes) - 1 or self.activate_final:
                x = self.activation(x)
        return x
