"""Accuracy of a multimodal meta-learner when modalities are missing at test time.

Every condition of :data:`mmjax.data.modality.CONDITIONS` is scored on the *same* episodes
(same key), sampled on device, so differences between conditions are paired comparisons.
"""

from __future__ import annotations

import os
from typing import Sequence

import chex
import jax

from mmjax.data.modality import CONDITIONS, condition_masks, mask_episodes
from mmjax.meta.learner import MetaLearner, Params
from mmjax.train.evaluate import evaluate_learner


def evaluate_conditions(
    learner: MetaLearner,
    params: Params,
    data: chex.ArrayTree,
    key: chex.PRNGKey,
    *,
    ways: int,
    shots: int,
    queries: int,
    conditions: Sequence[str] = CONDITIONS,
    missing: str = "strokes",
    num_episodes: int = 600,
    batch_size: int = 50,
) -> dict[str, dict]:
    """Accuracy ± 95% CI under each modality condition.

    Args:
      learner: the algorithm; its ``evaluate`` adapts on the support set and scores the query.
      params: meta-parameters of a multimodal classifier.
      data: device pytree ``{"image", "strokes", "mask"}``, leaves ``[classes, examples, ...]``.
      key: PRNG key; the same episodes are used for every condition.
      ways, shots, queries: episode sizes.
      conditions: names from :data:`mmjax.data.modality.CONDITIONS`.
      missing: the modality removed by ``"missing_in_support"`` / ``"missing_in_query"``.
      num_episodes: episodes per condition (>= 2).
      batch_size: episodes per ``vmap``-ed batch.

    Returns:
      ``{condition: {"accuracy", "accuracy_ci95", "loss", "num_episodes"}}``.
    """
    if not isinstance(data, dict) or "mask" not in data:
        raise ValueError(
            "data must be a multimodal split {'image', 'strokes', 'mask'} (config.data."
            f"modalities=('image', 'strokes')); got {type(data).__name__}"
        )
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"conditions={list(conditions)!r}: each must be one of {CONDITIONS}")
    results = {}
    for condition in conditions:
        # The condition enters as [M] presence factors, traced: one compiled function for all.
        metrics = evaluate_learner(
            learner,
            params,
            data,
            key,
            ways=ways,
            shots=shots,
            queries=queries,
            num_episodes=num_episodes,
            batch_size=batch_size,
            episode_transform=mask_episodes,
            transform_args=condition_masks(condition, missing=missing),
        )
        results[condition] = {
            name: metrics[name] for name in ("accuracy", "accuracy_ci95", "loss", "num_episodes")
        }
    return results


def evaluate_missing_modality(
    workdir: str | os.PathLike,
    *,
    split: str = "test",
    conditions: Sequence[str] = CONDITIONS,
    missing: str = "strokes",
    num_episodes: int | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, dict]:
    """:func:`evaluate_conditions` for the latest checkpoint of a multimodal run in ``workdir``.

    Episodes are drawn with ``PRNGKey(config.seed + 2)``, as the trainer's final test, so the
    ``"both"`` row of a model trained with ``train_condition="both"`` reproduces its
    ``results.json``.
    """
    from mmjax.train.restore import load_run  # noqa: PLC0415 (restore imports the trainer)

    config, splits, learner, state = load_run(workdir, overrides)
    return evaluate_conditions(
        learner,
        state.params,
        splits[split],
        jax.random.PRNGKey(config.seed + 2),
        ways=config.ways,
        shots=config.shots,
        queries=config.queries,
        conditions=conditions,
        missing=missing,
        num_episodes=num_episodes or config.test_episodes,
        batch_size=config.eval_batch_size,
    )


def format_conditions(results: dict[str, dict]) -> str:
    """Markdown table of :func:`evaluate_conditions` results (accuracy in %)."""
    lines = ["| condition | accuracy (%) | 95% CI | episodes |", "| --- | --- | --- | --- |"]
    for condition, r in results.items():
        lines.append(
            f"| {condition} | {100 * r['accuracy']:.2f} | ± {100 * r['accuracy_ci95']:.2f} "
            f"| {r['num_episodes']} |"
        )
    return "\n".join(lines)
