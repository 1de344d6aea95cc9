"""Few-shot evaluation: accuracy with a 95% confidence interval over many test episodes."""

from __future__ import annotations

import functools
import math

import chex
import jax
import numpy as np
from tqdm.auto import tqdm

from mmjax.data.episodes import sample_episodes, validate_episode_spec, classes_and_examples
from mmjax.meta import maml


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
    jax.jit, static_argnames=("loss_fn", "batch_size", "ways", "shots", "queries", "num_steps")
)
def _evaluate_batch(
    params, data, key, *, loss_fn, batch_size, ways, shots, queries, inner_lr, num_steps
):
    episodes = sample_episodes(
        key, data, batch_size=batch_size, ways=ways, shots=shots, queries=queries
    )
    per_task = functools.partial(
        maml.task_loss, loss_fn=loss_fn, inner_lr=inner_lr, num_steps=num_steps
    )
    _, metrics = jax.vmap(per_task, in_axes=(None, 0))(params, episodes)
    return metrics


def evaluate_maml(
    params: maml.Params,
    data: chex.ArrayTree,
    key: chex.PRNGKey,
    *,
    loss_fn: maml.LossFn,
    ways: int,
    shots: int,
    queries: int,
    inner_lr: float,
    num_steps: int,
    num_episodes: int = 600,
    batch_size: int = 50,
    progress: bool = False,
) -> dict:
    """Adapts to ``num_episodes`` sampled test episodes and scores the query sets.

    Args:
      params: meta-parameters.
      data: device pytree, leaves ``[classes, examples, ...]`` (the test split).
      key: PRNG key for episode sampling (same key, same episodes).
      num_episodes: number of episodes (>= 2); sampled in ``vmap``-ed batches.

    Returns:
      dict with ``accuracy``, ``accuracy_ci95`` (half-width), ``loss``, ``num_episodes`` and
      ``per_episode_accuracy`` (``[num_episodes]`` numpy array).
    """
    if num_episodes < 2:
        raise ValueError(f"num_episodes must be >= 2 for a confidence interval; got {num_episodes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    validate_episode_spec(*classes_and_examples(data), ways=ways, shots=shots, queries=queries)
    batch_size = min(batch_size, num_episodes)
    num_batches = -(-num_episodes // batch_size)
    accuracies, losses = [], []
    for key_batch in tqdm(
        jax.random.split(key, num_batches), desc="evaluate", leave=False, disable=not progress
    ):
        metrics = _evaluate_batch(
            params,
            data,
            key_batch,
            loss_fn=loss_fn,
            batch_size=batch_size,
            ways=ways,
            shots=shots,
            queries=queries,
            inner_lr=inner_lr,
            num_steps=num_steps,
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
    }
