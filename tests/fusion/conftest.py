"""Shared inputs for the fusion tests (the ``fusion_inputs`` fixture).

Data and parameters come from numpy, not ``jax.random``: on CPU every new shape drawn with
``jax.random`` costs a compile (~0.5 s), which would dominate these tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


class FusionInputs:
    """Standard inputs: three modalities of widths ``DIMS``, batch ``BATCH``, mask ``MASK``
    (``[B, M]``, as every fusion layer takes it)."""

    DIMS = (3, 5, 2)
    BATCH = 5
    # Every sample has a modality present; every modality is masked for some sample.
    MASK = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=bool)

    @staticmethod
    def features(seed: int = 0, dims=DIMS, batch: int = BATCH) -> list[jax.Array]:
        """``len(dims)`` float32 arrays ``[batch, d]`` of standard normal values."""
        rng = np.random.default_rng(seed)
        return [jnp.asarray(rng.normal(size=(batch, d)), jnp.float32) for d in dims]

    @staticmethod
    def corrupt_masked(features, mask, seed: int, mode: str) -> list[jax.Array]:
        """Replaces the masked rows (``mask: [B, M]``) by large random values (``"random"``) or
        NaN/+inf/-inf."""
        out = []
        dims = [x.shape[1] for x in features]
        for m, x in enumerate(FusionInputs.features(seed, dims, features[0].shape[0])):
            if mode == "nonfinite":
                x = jnp.asarray(np.resize(np.array([np.nan, np.inf, -np.inf], np.float32), x.shape))
            out.append(jnp.where(jnp.asarray(mask)[:, m, None], features[m], 1e3 * x))
        return out

    @staticmethod
    def random_params(module, *args, seed: int = 1, scale: float = 0.5):
        """Normal random parameters with the shapes ``module.init(key, *args)`` would give."""
        shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
        rng = np.random.default_rng(seed)
        return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, scale, s.shape), s.dtype), shapes)


@pytest.fixture(scope="session")
def fusion_inputs() -> type[FusionInputs]:
    return FusionInputs
