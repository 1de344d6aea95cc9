"""Meta-training and evaluation of MAML, Multi-MAML and MMAML on multimodal regression.

A small loop for the MMAML regression protocol (:mod:`mmjax.data.regression`): tasks are
sampled on device inside the jitted step, ``log_every`` meta-steps run per call under
``lax.scan``, and evaluation reports the query MSE after adaptation with a 95% CI, per mode
and over the uniform mixture. Methods:

* ``"maml"``: one MAML model on the whole mixture.
* ``"multi_maml"``: one MAML model per mode, each trained on its mode only and evaluated on
  it (the mode is given by an oracle).
* ``"mmaml"``: one MMAML model (task-encoder FiLM modulation + MAML) on the mixture.

The learners are :mod:`mmjax.meta`'s (``"maml_regression"`` and ``"mmaml"``, built by
:func:`make_regression_learner`); each meta-step is :func:`mmjax.meta.step.meta_update`.
This module is the data and loop glue around them.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmjax.data.regression import MIXTURES, sample_regression_tasks
from mmjax.meta import make_learner
from mmjax.meta.common import Params
from mmjax.meta.learner import MetaLearner
from mmjax.meta.step import meta_update
from mmjax.nn.classifier import Classifier
from mmjax.nn.mlp import MLP
from mmjax.train.evaluate import confidence_interval

METHODS = ("maml", "multi_maml", "mmaml")


def regression_model(hidden_sizes: tuple[int, ...] = (40, 40)) -> Classifier:
    """ReLU MLP ``[n, 1] -> [n, 1]`` as a ``Classifier`` (encoder + 1-output linear head)."""
    return Classifier(encoder=MLP(tuple(hidden_sizes), activate_final=True), num_classes=1)


def make_regression_learner(method: str, model: Classifier, **settings) -> MetaLearner:
    """``"maml"``/``"multi_maml"`` -> ``"maml_regression"``; ``"mmaml"`` -> MMAML, ``loss="mse"``.

    Both are built by :func:`mmjax.meta.make_learner`.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if method == "mmaml":
        return make_learner("mmaml", model, loss="mse", **settings)
    settings.pop("task_hidden_sizes", None)
    return make_learner("maml_regression", model, **settings)


def train_regression(
    learner: MetaLearner,
    key: chex.PRNGKey,
    *,
    num_modes: int,
    num_steps: int,
    meta_batch_size: int,
    shots: int,
    queries: int,
    learning_rate: float,
    noise_std: float = 0.3,
    mode: int | None = None,
    log_every: int = 100,
    grad_clip_norm: float = 0.0,
) -> tuple[Params, list[float]]:
    """Meta-trains ``learner`` with Adam on sampled regression tasks.

    Args:
      learner: a regression learner (``meta_grad`` metrics include ``loss``).
      key: PRNG key (initialisation and task sampling).
      num_modes: mixture size (2, 3 or 5).
      mode: train on this mode only (Multi-MAML); ``None`` for the mixture.
      log_every: meta-steps per jitted ``lax.scan`` chunk; one mean loss is logged per chunk.
      grad_clip_norm: clip the meta-gradient's global norm to this (0 disables).

    Returns:
      ``(params, losses)`` with ``losses`` the mean meta-training loss of each chunk.
    """
    if num_steps < 1 or log_every < 1:
        raise ValueError(f"num_steps and log_every must be >= 1; got {num_steps}, {log_every}")
    init_key, key = jax.random.split(key)
    example = jnp.zeros((shots, 1))
    params = learner.init(init_key, example)
    optimizer = optax.adam(learning_rate)
    if grad_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(grad_clip_norm), optimizer)
    sample = functools.partial(
        sample_regression_tasks,
        num_modes=num_modes,
        batch_size=meta_batch_size,
        shots=shots,
        queries=queries,
        noise_std=noise_std,
        mode=mode,
    )

    @functools.partial(jax.jit, static_argnames="length")
    def run(params, opt_state, key, length):
        def step(carry, step_key):
            params, opt_state = carry
            episodes, _ = sample(step_key)
            params, opt_state, metrics = meta_update(
                learner, optimizer, params, opt_state, episodes
            )
            return (params, opt_state), metrics["loss"]

        (params, opt_state), losses = jax.lax.scan(
            step, (params, opt_state), jax.random.split(key, length)
        )
        return params, opt_state, jnp.mean(losses)

    opt_state = optimizer.init(params)
    losses = []
    done = 0
    while done < num_steps:
        length = min(log_every, num_steps - done)
        key, chunk_key = jax.random.split(key)
        params, opt_state, loss = run(params, opt_state, chunk_key, length)
        losses.append(float(loss))
        done += length
    return params, losses


def evaluate_regression(
    learner: MetaLearner,
    params: Params | list[Params],
    key: chex.PRNGKey,
    *,
    num_modes: int,
    num_tasks_per_mode: int,
    shots: int,
    queries: int,
    noise_std: float = 0.3,
) -> dict:
    """Query MSE after adaptation on ``num_tasks_per_mode`` tasks of every mode.

    Args:
      params: meta-parameters, or a list of ``num_modes`` of them (Multi-MAML: list entry ``m``
        is evaluated on the tasks of mode ``m``).
      key: PRNG key; the same key gives the same tasks for every method.

    Returns:
      ``{"mse", "mse_ci95", "per_mode_mse": {family: mse}}`` over the uniform mixture.
    """
    per_mode = {}
    values = []
    for mode, family in enumerate(MIXTURES[num_modes]):
        episodes, _ = sample_regression_tasks(
            jax.random.fold_in(key, mode),
            num_modes=num_modes,
            batch_size=num_tasks_per_mode,
            shots=shots,
            queries=queries,
            noise_std=noise_std,
            mode=mode,
        )
        mode_params = params[mode] if isinstance(params, list) else params
        mse = np.asarray(jax.jit(learner.evaluate)(mode_params, episodes)["loss"])
        per_mode[family] = float(mse.mean())
        values.append(mse)
    mean, half_width = confidence_interval(np.concatenate(values))
    return {"mse": mean, "mse_ci95": half_width, "per_mode_mse": per_mode}


def run_regression(config: ml_collections.ConfigDict, method: str | None = None) -> dict:
    """Trains and evaluates ``method`` (default ``config.method``) as configured.

    Returns:
      :func:`evaluate_regression`'s dict plus ``method``, ``num_modes`` and ``train_losses``.
    """
    method = method or config.method
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    model = regression_model(tuple(config.hidden_sizes))
    settings = dict(
        inner_lr=config.inner_lr,
        num_inner_steps=config.num_inner_steps,
        eval_num_inner_steps=config.eval_num_inner_steps,
        first_order=config.first_order,
    )
    if method == "mmaml":
        settings["task_hidden_sizes"] = tuple(config.task_hidden_sizes)
    learner = make_regression_learner(method, model, **settings)
    train = functools.partial(
        train_regression,
        learner,
        num_modes=config.num_modes,
        num_steps=config.num_steps,
        meta_batch_size=config.meta_batch_size,
        shots=config.shots,
        queries=config.queries,
        learning_rate=config.learning_rate,
        noise_std=config.noise_std,
        log_every=config.log_every,
        grad_clip_norm=config.grad_clip_norm,
    )
    key = jax.random.PRNGKey(config.seed)
    if method == "multi_maml":
        runs = [train(jax.random.fold_in(key, m), mode=m) for m in range(config.num_modes)]
        params, losses = [p for p, _ in runs], [loss for _, ls in runs for loss in ls]
    else:
        params, losses = train(key)
    result = evaluate_regression(
        learner,
        params,
        jax.random.PRNGKey(config.seed + 1),
        num_modes=config.num_modes,
        num_tasks_per_mode=config.eval_tasks_per_mode,
        shots=config.shots,
        queries=config.queries,
        noise_std=config.noise_std,
    )
    return dict(result, method=method, num_modes=config.num_modes, train_losses=losses)
