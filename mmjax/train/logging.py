"""Metrics sinks: TensorBoard scalars, a JSON-lines file, and the learning-curve plot."""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np


class MetricsWriter:
    """Writes scalars to TensorBoard (``<workdir>/tensorboard``) and ``metrics.jsonl``."""

    def __init__(self, workdir: str | os.PathLike):
        from tensorboardX import SummaryWriter  # imported lazily: optional at import time

        self.workdir = os.fspath(workdir)
        self._tb = SummaryWriter(os.path.join(self.workdir, "tensorboard"))
        self._jsonl = open(os.path.join(self.workdir, "metrics.jsonl"), "a")

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        for name, value in scalars.items():
            self._tb.add_scalar(f"{split}/{name}", value, step)
        self._jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        self._tb.close()
        self._jsonl.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Reads ``metrics.jsonl`` records (a resumed run appends; later records win per step)."""
    records = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            records[(record["split"], record["step"])] = record
    return sorted(records.values(), key=lambda r: (r["split"], r["step"]))


def plot_learning_curve(
    metrics_path: str | os.PathLike, out_path: str | os.PathLike, title: str = ""
) -> None:
    """Plots train query loss/accuracy and validation accuracy (with 95% CI) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        steps = [r["step"] for r in train]
        ax_loss.plot(steps, [r["loss"] for r in train], label="train query loss")
        ax_acc.plot(steps, [r["accuracy"] for r in train], label="train query accuracy")
    if val:
        steps = [r["step"] for r in val]
        ax_acc.errorbar(
            steps,
            [r["accuracy"] for r in val],
            yerr=[r.get("accuracy_ci95", 0.0) for r in val],
            fmt="o-",
            capsize=3,
            label="validation accuracy (95% CI)",
        )
        ax_loss.plot(steps, [r["loss"] for r in val], "o-", label="validation query loss")
    ax_loss.set_xlabel("meta-step"), ax_loss.set_ylabel("loss")
    ax_acc.set_xlabel("meta-step"), ax_acc.set_ylabel("accuracy"), ax_acc.set_ylim(0, 1)
    if train or val:
        ax_loss.legend()
        ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
