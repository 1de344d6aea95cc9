"""Episodic training loop, evaluation with confidence intervals, checkpoints and logging."""

from mmjax.train.checkpoint import Checkpointer
from mmjax.train.evaluate import confidence_interval, evaluate_learner
from mmjax.train.loop import NonFiniteLossError, TrainState, build_run, train
from mmjax.train.restore import evaluate_checkpoint, load_run

__all__ = [
    "Checkpointer",
    "NonFiniteLossError",
    "TrainState",
    "build_run",
    "confidence_interval",
    "evaluate_checkpoint",
    "evaluate_learner",
    "load_run",
    "train",
]
