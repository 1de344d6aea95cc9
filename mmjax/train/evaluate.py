"""Few-shot evaluation: accuracy with a 95% confidence interval over many test episodes."""

from __future__ import annotations

import functools
import math
from typing import Callable

import chex
import jax
import numpy as np
from tqdm.auto import tqdm

from mmjax.data.episodes import (
    Episode,
    classes_and_examples,
    sample_episodes,
    validate_episode_spec,
)
from mmjax.meta.learner import MetaLearner, Params


def confidence_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and normal-approximation half-width ``z * std / sqrt(n)`` (z = 1.96 at 95%)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"values must be 1-D with at least 2 entries; got shape {values.shape}")
    z = {0.95: 1.959963984540054, 0.99: 2.5758293035489004}.get(confidence)
    if z is None:
        raise ValueError(f"confidence must be 0.95 or 0.99; got {confidence}")
    return float(values.mean()), float(z * values.std(ddof=1) / math.sqrt(values.size))


@functools.partial(
    jax.jit,
    static_argnames=("learner", "episode_transform", "batch_size", "ways", "shots", "queries"),
)
def _evaluate_batch(
    learner, params, data, key, transform_args, *, episode_transform, batch_size, ways, shots, queries
):
    episodes = sample_episodes(
        key, data, batch_size=batch_size, ways=ways, shots=shots, queries=queries
    )
    if episode_transform is not None:
        episodes = episode_transform(episodes, *transform_args)
    return learner.evaluate(params, episodes)


def evaluate_learner(
    learner: MetaLearner,
    params: Params,
    data: chex.ArrayTree,
    key: chex.PRNGKey,
    *,
    ways: int,
    shots: int,
    queries: int,
    num_episodes: int = 600,
    batch_size: int = 50,
    progress: bool = False,
    episode_transform: Callable[..., Episode] | None = None,
    transform_args: tuple = (),
) -> dict:
    """Adapts to ``num_episodes`` sampled test episodes and scores their query sets.

    Args:
      learner: the algorithm (its ``evaluate`` adapts and scores a batch of episodes).
      params: meta-parameters.
      data: device pytree, leaves ``[classes, examples, ...]`` (e.g. the test split).
      key: PRNG key for episode sampling (same key, same episodes).
      ways, shots, queries: the episodes' sizes (``ways >= 2``).
      num_episodes: number of episodes (>= 2); sampled in ``vmap``-ed batches.
      batch_size: episodes per ``vmap``-ed batch.
      progress: show a tqdm bar over the batches.
      episode_transform: optional ``episode_transform(episodes, *transform_args) -> episodes``
        applied inside the compiled function before adaptation (e.g.
        :func:`mmjax.data.modality.mask_episodes`); a module-level function, as it is static.
      transform_args: arrays passed to ``episode_transform``; they are traced, so one compiled
        function serves every value (e.g. every modality condition).

    Returns:
      dict with ``accuracy``, ``accuracy_ci95`` (half-width), ``loss``, ``num_episodes``,
      ``per_episode_accuracy`` (``[num_episodes]`` numpy array) and ``batch_norm``, the
      evaluation's batch-norm mode (:mod:`mmjax.meta.batch_norm_eval`).
    """
    if num_episodes < 2:
        raise ValueError(f"num_episodes must be >= 2 for a confidence interval; got {num_episodes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    validate_episode_spec(*classes_and_examples(data), ways=ways, shots=shots, queries=queries)
    if ways < 2:
        raise ValueError(
            f"ways={ways!r} must be an int >= 2 (a 1-way episode is classified correctly by any "
            "model: accuracy 100% +- 0)"
        )
    batch_size = min(batch_size, num_episodes)
    num_batches = -(-num_episodes // batch_size)
    accuracies, losses = [], []
    keys = jax.random.split(key, num_batches)
    for key_batch in tqdm(keys, desc="evaluate", leave=False, disable=not progress):
        metrics = _evaluate_batch(
            learner,
            params,
            data,
            key_batch,
            tuple(transform_args),
            episode_transform=episode_transform,
            batch_size=batch_size,
            ways=ways,
            shots=shots,
            queries=queries,
        )
        accuracies.append(np.asarray(metrics["accuracy"]))
        losses.append(np.asarray(metrics["loss"]))
    accuracy = np.concatenate(accuracies)[:num_episodes]
    loss = np.concatenate(losses)[:num_episodes]
    mean, half_width = confidence_interval(accuracy)
    return {
        "accuracy": mean,
        "accuracy_ci95": half_width,
        "loss": float(loss.mean()),
        "num_episodes": int(num_episodes),
        "per_episode_accuracy": accuracy,
        "batch_norm": learner.eval_batch_norm,
    }
