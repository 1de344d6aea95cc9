"""Evaluate a finished (or interrupted) run from its workdir."""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax

from mmjax import configs, storage
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.evaluate import evaluate_learner
from mmjax.train.loop import build_run
from mmjax.train.workdir import read_config


def load_run(workdir: str | os.PathLike, overrides: Sequence[str] = ()):
    """Restores a run from ``workdir``'s ``config.json`` and newest checkpoint that restores.

    A checkpoint that fails to restore is reported and the previous one is used; being a
    reader (a trainer may be running), it moves no file.

    Returns:
      ``(config, splits, learner, state)``.
    """
    path = storage.join(workdir, "config.json")
    if not storage.exists(path):
        raise FileNotFoundError(f"--checkpoint {workdir!s} is not an mmjax workdir: no config.json")
    config = configs.apply_overrides(read_config(path), overrides)
    splits, learner, _, state = build_run(config)
    checkpointer = Checkpointer(workdir)
    try:
        state, _ = checkpointer.restore_newest(state)  # a reader: falls back, moves nothing
    finally:
        checkpointer.close()
    return config, splits, learner, state


def evaluate_checkpoint(
    workdir: str | os.PathLike,
    *,
    split: str = "test",
    num_episodes: int | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Accuracy ± 95% CI of the latest checkpoint on ``split`` (default ``config.test_episodes``)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r} is not one of ('train', 'val', 'test')")
    config, splits, learner, state = load_run(workdir, overrides)
    result = evaluate_learner(
        learner,
        state.params,
        splits[split],
        jax.random.PRNGKey(config.seed + 2),
        ways=config.ways,
        shots=config.shots,
        queries=config.queries,
        num_episodes=config.test_episodes if num_episodes is None else num_episodes,
        batch_size=config.eval_batch_size,
        progress=True,
    )
    result.pop("per_episode_accuracy")
    return dict(result, split=split, step=int(state.step))
