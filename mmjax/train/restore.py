"""Evaluate a finished (or interrupted) run from its workdir."""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import ml_collections

from mmjax import configs
from mmjax.meta import maml
from mmjax.train import builders
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.evaluate import evaluate_maml
from mmjax.train.loop import init_state


def load_run(workdir: str | os.PathLike, overrides: Sequence[str] = ()):
    """Returns ``(config, model, state)`` restored from ``workdir``'s latest checkpoint."""
    path = os.path.join(os.fspath(workdir), "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoint {workdir!s} is not an mmjax workdir: no config.json")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    config = configs.apply_overrides(config, overrides)
    model = builders.build_model(config)
    optimizer = builders.build_optimizer(config)
    example = jax.numpy.zeros(
        (config.ways * config.shots, config.data.image_size, config.data.image_size, 1)
    )
    state = init_state(config, model, optimizer, example)
    checkpointer = Checkpointer(workdir)
    try:
        state = checkpointer.restore(state)
    finally:
        checkpointer.close()
    return config, model, state


def evaluate_checkpoint(
    workdir: str | os.PathLike,
    *,
    split: str = "test",
    num_episodes: int | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Accuracy ± 95% CI of the latest checkpoint on ``split`` (default ``config.test_episodes``)."""
    config, model, state = load_run(workdir, overrides)
    data = builders.load_splits(config)[split]
    result = evaluate_maml(
        state.params,
        data,
        jax.random.PRNGKey(config.seed + 2),
        loss_fn=maml.classification_loss(model.apply),
        ways=config.ways,
        shots=config.shots,
        queries=config.queries,
        inner_lr=config.maml.inner_lr,
        num_steps=config.maml.eval_num_inner_steps,
        num_episodes=num_episodes or config.test_episodes,
        batch_size=config.eval_batch_size,
        progress=True,
    )
    result.pop("per_episode_accuracy")
    return dict(result, split=split, step=int(state.step))
