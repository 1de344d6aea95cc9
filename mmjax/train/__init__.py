"""Episodic training loop, evaluation with confidence intervals, checkpoints and logging."""

from mmjax.train.checkpoint import Checkpointer
from mmjax.train.evaluate import confidence_interval, evaluate_learner
from mmjax.train.loop import NonFiniteLossError, TrainState, build_run, train
from mmjax.train.missing_modality import evaluate_conditions, evaluate_missing_modality
from mmjax.train.one_shot_runs import score_runs, score_workdir
from mmjax.train.restore import evaluate_checkpoint, load_run
from mmjax.train.runtime import runtime_summary

__all__ = [
    "Checkpointer",
    "NonFiniteLossError",
    "TrainState",
    "build_run",
    "confidence_interval",
    "evaluate_checkpoint",
    "evaluate_conditions",
    "evaluate_missing_modality",
    "evaluate_learner",
    "load_run",
    "runtime_summary",
    "score_runs",
    "score_workdir",
    "train",
]
