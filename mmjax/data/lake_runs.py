"""The 20 runs of 20-way one-shot classification of Lake, Salakhutdinov & Tenenbaum (2015).

``all_runs.zip`` holds ``runNN/training/classKK.png`` (one image of each of 20 characters
of the evaluation alphabets), ``runNN/test/itemKK.png`` (20 new drawings of the same
characters) and ``runNN/class_labels.txt``, one line ``runNN/test/itemKK.png
runNN/training/classJJ.png`` per test item naming its training image. Images are processed
like the rest of :mod:`mmjax.data.omniglot`: resized to ``image_size`` (Lanczos), float32
with ink = 1.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile

import numpy as np

from mmjax.data import archives, omniglot

NUM_RUNS = 20
WAYS = 20

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True, eq=False)
class LakeRuns:
    """The one-shot runs as arrays.

    Attributes:
      train_images: [runs, 20, H, W, 1] float32, ink = 1; row ``j`` is ``classJJ`` (j + 1).
      test_images: [runs, 20, H, W, 1] float32; row ``i`` is ``itemII``.
      test_labels: [runs, 20] int32: the training row of each test item's character.
      run_names: [runs] ``"run01"`` ...
    """

    train_images: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    run_names: tuple[str, ...]

    def __post_init__(self):
        runs, ways = np.shape(self.test_labels)
        for name in ("train_images", "test_images"):
            shape = np.shape(getattr(self, name))
            if len(shape) != 5 or shape[:2] != (runs, ways):
                raise ValueError(
                    f"{name} has shape {shape}; expected [runs={runs}, {ways}, H, W, 1]"
                )
        if len(self.run_names) != runs:
            raise ValueError(f"run_names has {len(self.run_names)} names for {runs} runs")


_LINE = re.compile(r"^(run\d+)/test/item(\d+)\.png\s+(run\d+)/training/class(\d+)\.png$")


def parse_class_labels(text: str, run: str, *, ways: int = WAYS) -> np.ndarray:
    """``class_labels.txt`` of ``run`` -> [ways] int32 training index (0-based) of each item.

    Raises:
      ValueError: a malformed line, a path of another run, an item or class out of range,
        an item listed twice or missing, or labels that are not a permutation of the classes.
    """
    labels = np.full(ways, -1, np.int32)
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match:
            raise ValueError(
                f"{run}/class_labels.txt line {number}: {line[:80]!r} is not "
                f"'{run}/test/itemNN.png {run}/training/classNN.png'"
            )
        test_run, item, train_run, label = match.groups()
        item, label = int(item) - 1, int(label) - 1
        if test_run != run or train_run != run:
            raise ValueError(f"{run}/class_labels.txt line {number} names another run: {line!r}")
        if not (0 <= item < ways and 0 <= label < ways):
            raise ValueError(
                f"{run}/class_labels.txt line {number}: item/class out of 1..{ways}: {line!r}"
            )
        if labels[item] >= 0:
            raise ValueError(f"{run}/class_labels.txt line {number}: item {item + 1} listed twice")
        labels[item] = label
    if np.any(labels < 0):
        missing = (np.flatnonzero(labels < 0) + 1).tolist()
        raise ValueError(f"{run}/class_labels.txt has no line for test items {missing}")
    if sorted(labels.tolist()) != list(range(ways)):
        raise ValueError(
            f"{run}/class_labels.txt: labels {labels.tolist()} are not a permutation of the "
            f"{ways} training classes"
        )
    return labels


def read_lake_runs(path: PathLike, *, image_size: int = 28) -> LakeRuns:
    """Decodes ``all_runs.zip`` at ``path`` (no md5 check, no cache).

    Raises:
      ValueError: no ``runNN/`` folder, a run without 20 training and 20 test images, or a
        bad ``class_labels.txt`` (see :func:`parse_class_labels`).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be an int >= 1")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        runs = sorted({n.split("/")[0] for n in names if re.match(r"^run\d+/", n)})
        if not runs:
            raise ValueError(f"{path}: no 'runNN/' folder; is this all_runs.zip?")
        train, test, labels = [], [], []
        for run in runs:
            images = {}
            for part, stem in (("training", "class"), ("test", "item")):
                members = [f"{run}/{part}/{stem}{k:02d}.png" for k in range(1, WAYS + 1)]
                absent = [m for m in members if m not in names]
                if absent:
                    raise ValueError(
                        f"{path}: {run} lacks {len(absent)} of its {WAYS} {part} images, "
                        f"e.g. {absent[0]}"
                    )
                images[part] = np.stack(
                    [
                        omniglot._decode_png(archive.read(m), f"{path}:{m}", image_size)
                        for m in members
                    ]
                )
            labels_member = f"{run}/class_labels.txt"
            if labels_member not in names:
                raise ValueError(f"{path}: {run} has no class_labels.txt")
            text = archive.read(labels_member).decode("utf-8")
            labels.append(parse_class_labels(text, run))
            train.append(images["training"])
            test.append(images["test"])
    as_float = lambda x: (np.stack(x).astype(np.float32) / 255.0)[..., None]
    return LakeRuns(
        train_images=as_float(train),
        test_images=as_float(test),
        test_labels=np.stack(labels).astype(np.int32),
        run_names=tuple(runs),
    )


def load_lake_runs(
    data_dir: PathLike | None = None, *, image_size: int = 28, download: bool = False
) -> LakeRuns:
    """Loads the 20 runs from ``all_runs.zip`` in ``data_dir`` (or ``$MMJAX_DATA_DIR``).

    The archive is md5-checked like the other Omniglot archives.

    Returns:
      `LakeRuns` with train/test images [20, 20, image_size, image_size, 1].
    """
    path = archives.archive_path("all_runs", data_dir, download=download)
    runs = read_lake_runs(path, image_size=image_size)
    if len(runs.run_names) != NUM_RUNS:
        raise ValueError(f"{path} holds {len(runs.run_names)} runs; expected {NUM_RUNS}")
    return runs
