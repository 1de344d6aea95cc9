"""Metrics sinks: TensorBoard scalars, a JSON-lines file, and the learning-curve plot."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping

import numpy as np

from mmjax import storage


class MetricsWriter:
    """Writes scalars to TensorBoard (``<workdir>/tensorboard``) and ``metrics.jsonl``.

    A cloud workdir (`mmjax.storage`): the event files are written to a local temporary
    folder and copied to ``<workdir>/tensorboard`` after each `write`, and ``metrics.jsonl``
    is rewritten whole (committed) after each `write`, as cloud objects cannot be appended to.
    """

    def __init__(self, workdir: str | os.PathLike):
        from tensorboardX import SummaryWriter  # imported lazily: optional at import time

        self.workdir = os.fspath(workdir)
        self._local = storage.is_local(self.workdir)
        self._tb_dir = storage.join(self.workdir, "tensorboard")
        self._mirror = None
        if self._local:
            self._tb = SummaryWriter(self._tb_dir)
        else:
            self._mirror = tempfile.TemporaryDirectory(prefix="mmjax-tensorboard-")
            self._tb = SummaryWriter(self._mirror.name)
        path = storage.join(self.workdir, "metrics.jsonl")
        self._path = path
        if not self._local:
            self._lines = storage.read_text(path) if storage.exists(path) else ""
            if self._lines and not self._lines.endswith("\n"):
                self._lines += "\n"
            self._jsonl = None
            return
        torn = os.path.exists(path) and os.path.getsize(path) > 0 and _last_byte(path) != b"\n"
        self._jsonl = open(path, "a")
        if torn:  # a run killed in mid-write: end its torn record so that ours stay whole
            self._jsonl.write("\n")

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        """Logs the numeric scalar entries of ``metrics`` (shape ``[]``) as ``<split>/<name>``.

        Strings (e.g. the ``batch_norm`` mode of an evaluation) are not logged.
        """
        scalars = {
            k: float(v) for k, v in metrics.items() if np.ndim(v) == 0 and not isinstance(v, str)
        }
        for name, value in scalars.items():
            self._tb.add_scalar(f"{split}/{name}", value, step)
        line = json.dumps({"step": int(step), "split": split, **scalars}) + "\n"
        if self._jsonl is None:  # cloud: rewrite and commit the whole file, upload events
            self._lines += line
            storage.write_text(self._path, self._lines)
            self._tb.flush()
            storage.upload_tree(self._mirror.name, self._tb_dir)
            return
        self._jsonl.write(line)
        self._jsonl.flush()

    def close(self) -> None:
        """Flushes and closes both sinks."""
        self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._mirror is not None:
            storage.upload_tree(self._mirror.name, self._tb_dir)
            self._mirror.cleanup()
            self._mirror = None


def _last_byte(path: str) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Reads ``metrics.jsonl`` records (a resumed run appends; later records win per step)."""
    records = {}
    for line in storage.read_text(path).splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # torn by a kill during the write; logged again
            continue
        records[(record["split"], record["step"])] = record
    return sorted(records.values(), key=lambda r: (r["split"], r["step"]))


def plot_learning_curve(
    metrics_path: str | os.PathLike, out_path: str | os.PathLike, title: str = ""
) -> None:
    """Plots train query loss/accuracy and validation accuracy (with 95% CI) against step."""
    # A bare Figure (no pyplot): no global backend switch, so notebooks keep inline plots.
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
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
    # Atomic (`mmjax.storage`): a reader never sees a partial file.
    storage.buffer_savefig(fig, os.fspath(out_path), dpi=110)
