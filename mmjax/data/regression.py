"""Multimodal few-shot regression tasks (the MMAML protocol), sampled on device.

Each task is a function ``y = f(x)`` drawn from one of five families (the *modes*); the
families and parameter ranges are those of Vuorio et al. (2019, "Multimodal Model-Agnostic
Meta-Learning via Task-Aware Modulation", appendix), as implemented in the authors' code
(``vuoristo/MMAML-Regression``, ``maml/datasets/simple_functions.py``):

========== ================================ ==========================================
family     function                         parameters
========== ================================ ==========================================
sinusoid   ``A sin(x - φ)``                 ``A ∈ [0.1, 5]``, ``φ ∈ [0, π]``
linear     ``a x + b``                      ``a ∈ [-3, 3]``, ``b ∈ [-3, 3]``
quadratic  ``a (x - c)² + b``               ``|a| ∈ [0.02, 0.15]`` (random sign),
                                            ``c ∈ [-3, 3]``, ``b ∈ [-3, 3]``
l1_norm    ``a |x - c| + b``                ``a ∈ [-3, 3]``, ``c ∈ [-3, 3]``, ``b ∈ [-3, 3]``
tanh       ``a tanh(x - c) + b``            ``a ∈ [-3, 3]``, ``c ∈ [-3, 3]``, ``b ∈ [-3, 3]``
========== ================================ ==========================================

Inputs are uniform on ``[-5, 5]``; targets get Gaussian noise of std ``noise_std`` (0.3 in
the paper). The 2-, 3- and 5-mode mixtures are the first 2, 3 or 5 families above, each task
drawing its mode uniformly. Tasks come as :class:`mmjax.data.episodes.Episode` with inputs
``[n, 1]`` and float *labels* ``y: [n]``.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp

from mmjax.data.episodes import Episode

FAMILIES = ("sinusoid", "linear", "quadratic", "l1_norm", "tanh")
MIXTURES = {2: FAMILIES[:2], 3: FAMILIES[:3], 5: FAMILIES}
INPUT_RANGE = (-5.0, 5.0)

# name -> {parameter: (low, high)}; quadratic "amplitude" is |a| (its sign is random).
PARAMETER_RANGES = {
    "sinusoid": {"amplitude": (0.1, 5.0), "phase": (0.0, math.pi)},
    "linear": {"slope": (-3.0, 3.0), "intercept": (-3.0, 3.0)},
    "quadratic": {"amplitude": (0.02, 0.15), "center": (-3.0, 3.0), "bias": (-3.0, 3.0)},
    "l1_norm": {"slope": (-3.0, 3.0), "center": (-3.0, 3.0), "bias": (-3.0, 3.0)},
    "tanh": {"slope": (-3.0, 3.0), "center": (-3.0, 3.0), "bias": (-3.0, 3.0)},
}


def check_family(family: str) -> None:
    """Raises ``ValueError`` listing the valid names when ``family`` is unknown."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {', '.join(FAMILIES)}")


def sample_parameters(key: chex.PRNGKey, family: str) -> dict[str, jax.Array]:
    """Draws one function's parameters (scalars) of ``family`` from its published ranges.

    For ``quadratic``, ``amplitude`` is signed: ``±U[0.02, 0.15]``.
    """
    check_family(family)
    ranges = PARAMETER_RANGES[family]
    keys = jax.random.split(key, len(ranges) + 1)
    params = {
        name: jax.random.uniform(k, (), minval=low, maxval=high)
        for k, (name, (low, high)) in zip(keys[1:], ranges.items())
    }
    if family == "quadratic":
        sign = jnp.where(jax.random.bernoulli(keys[0]), 1.0, -1.0)
        params["amplitude"] = sign * params["amplitude"]
    return params


def evaluate_function(family: str, params: dict, x: chex.Array) -> jax.Array:
    """``f(x)`` of ``family`` with ``params`` (from :func:`sample_parameters`), shaped like ``x``."""
    check_family(family)
    p = params
    if family == "sinusoid":
        return p["amplitude"] * jnp.sin(x - p["phase"])
    if family == "linear":
        return p["slope"] * x + p["intercept"]
    if family == "quadratic":
        return p["amplitude"] * (x - p["center"]) ** 2 + p["bias"]
    if family == "l1_norm":
        return p["slope"] * jnp.abs(x - p["center"]) + p["bias"]
    return p["slope"] * jnp.tanh(x - p["center"]) + p["bias"]


def _check_modes(num_modes: int) -> None:
    if num_modes not in MIXTURES:
        raise ValueError(f"num_modes={num_modes!r} is not one of {sorted(MIXTURES)}")


def _sample_task(key, mode, *, num_modes, shots, queries, noise_std):
    families = MIXTURES[num_modes]
    param_key, x_key, noise_key = jax.random.split(key, 3)
    x = jax.random.uniform(x_key, (shots + queries,), minval=INPUT_RANGE[0], maxval=INPUT_RANGE[1])
    branches = [
        functools.partial(
            lambda k, x, family: evaluate_function(family, sample_parameters(k, family), x),
            family=family,
        )
        for family in families
    ]
    y = jax.lax.switch(mode, branches, param_key, x)
    y = y + noise_std * jax.random.normal(noise_key, y.shape)
    inputs = x[:, None]
    return Episode(inputs[:shots], y[:shots], inputs[shots:], y[shots:])


@functools.partial(jax.jit, static_argnames=("num_modes", "batch_size", "shots", "queries", "mode"))
def sample_regression_tasks(
    key: chex.PRNGKey,
    *,
    num_modes: int,
    batch_size: int,
    shots: int,
    queries: int,
    noise_std: float = 0.3,
    mode: int | None = None,
) -> tuple[Episode, jax.Array]:
    """Samples ``batch_size`` K-shot regression tasks from the ``num_modes``-mode mixture.

    Args:
      key: PRNG key.
      num_modes: 2, 3 or 5 (families ``MIXTURES[num_modes]``).
      batch_size: number of tasks.
      shots: support points per task (K).
      queries: query points per task.
      noise_std: std of the Gaussian noise added to every target.
      mode: if given, every task comes from family ``MIXTURES[num_modes][mode]`` (the oracle
        mode of Multi-MAML); otherwise each task draws its mode uniformly.

    Returns:
      ``(episodes, modes)``: ``Episode`` with ``support_inputs: [batch, shots, 1]``,
      ``support_labels: [batch, shots]`` (float targets), ``query_inputs: [batch, queries, 1]``,
      ``query_labels: [batch, queries]``; ``modes: [batch]`` int32 family indices.
    """
    _check_modes(num_modes)
    for name, value in (("batch_size", batch_size), ("shots", shots), ("queries", queries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an int >= 1")
    if mode is not None and not 0 <= mode < num_modes:
        raise ValueError(f"mode={mode!r} must be in [0, {num_modes}) for num_modes={num_modes}")
    mode_key, task_key = jax.random.split(key)
    if mode is None:
        modes = jax.random.randint(mode_key, (batch_size,), 0, num_modes)
    else:
        modes = jnp.full((batch_size,), mode, jnp.int32)
    sample = functools.partial(
        _sample_task, num_modes=num_modes, shots=shots, queries=queries, noise_std=noise_std
    )
    episodes = jax.vmap(sample)(jax.random.split(task_key, batch_size), modes)
    return episodes, modes.astype(jnp.int32)
