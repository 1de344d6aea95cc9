"""mini-ImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (2017) class split.

100 ImageNet classes x 600 images, 64 / 16 / 20 classes for meta-train / val / test,
84x84 RGB. Two on-disk forms are read (put either in ``<data_dir>/miniimagenet/``):

* **images + csv** (Ravi & Larochelle's ``train.csv`` / ``val.csv`` / ``test.csv``): each csv
  has the header ``filename,label`` and one row per image, e.g.
  ``n0153282900000005.jpg,n01532829``; the images are in ``images/<filename>`` (any size,
  resized here to ``image_size`` with Lanczos, as Ravi & Larochelle's script does);
* **pickled arrays** ``mini-imagenet-cache-{train,val,test}.pkl``: each a dict with
  ``"image_data"``: ``[N, 84, 84, 3]`` uint8 and ``"class_dict"``: ``{wnid: [indices into
  image_data]}`` (the form learn2learn's ``MiniImagenet`` reads).
"""

from __future__ import annotations

import csv
import functools
import os
import pathlib
import pickle

import numpy as np

from mmjax.data import image_splits
from mmjax.data.image_splits import SPLITS
from mmjax.data.omniglot import ClassImages

NUM_CLASSES = {"train": 64, "val": 16, "test": 20}
SOURCES = ("auto", "csv", "pickle")
FOLDER_NAMES = ("miniimagenet", "mini-imagenet", "mini_imagenet")
PICKLE_NAME = "mini-imagenet-cache-{split}.pkl"
DOWNLOAD_PAGE = (
    "https://github.com/twitter-research/meta-learning-lstm (csv split files; images from "
    "ImageNet, https://image-net.org) or the learn2learn MiniImagenet pickles"
)
_LAYOUT = (
    "a folder 'miniimagenet/' holding either train.csv, val.csv, test.csv (rows "
    "'filename,label') and images/<filename>, or mini-imagenet-cache-{train,val,test}.pkl."
)


def _has_csv(path: pathlib.Path) -> bool:
    return all((path / f"{s}.csv").is_file() for s in SPLITS) and (path / "images").is_dir()


def _has_pickles(path: pathlib.Path) -> bool:
    return all((path / PICKLE_NAME.format(split=s)).is_file() for s in SPLITS)


def read_split_csv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``[(filename, label)]`` rows of a Ravi & Larochelle split file (header ``filename,label``).

    Raises:
      ValueError: the header is not ``filename,label`` or a row has not two fields.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{str(path)!r}: expected the header 'filename,label', got {rows[:1]}")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(f"{str(path)!r} line {number}: expected 'filename,label', got {row}")
        out.append((row[0].strip(), row[1].strip()))
    return out


def _build_csv(root: pathlib.Path, image_size: int) -> image_splits.RawSplits:
    raw = {}
    for split in SPLITS:
        rows = read_split_csv(root / f"{split}.csv")
        what = f"mini-ImageNet {split}.csv"
        classes, indices = image_splits.group_by_class(
            [label for _, label in rows], examples_per_class=None, what=what
        )
        images = np.stack(
            [
                np.stack(
                    [
                        image_splits.to_rgb(
                            root / "images" / rows[i][0], image_size, what=f"{what}: {rows[i][0]}"
                        )
                        for i in row
                    ]
                )
                for row in indices
            ]
        )
        ids = np.array([[os.path.splitext(rows[i][0])[0] for i in row] for row in indices])
        raw[split] = (images, classes, ids)
    return raw


def read_cache_pickle(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, list[int]]]:
    """``(image_data [N, H, W, 3] uint8, class_dict {wnid: [indices]})`` of one pickle.

    Raises:
      ValueError: a key is missing or ``image_data`` is not ``[N, H, W, 3]`` uint8.
    """
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{str(path)!r}: expected keys 'image_data' and 'class_dict', got {keys}")
    images = np.asarray(data["image_data"])
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{str(path)!r}: image_data must be [N, H, W, 3] uint8, got {images.shape} "
            f"{images.dtype}"
        )
    return images, {str(k): [int(i) for i in v] for k, v in data["class_dict"].items()}


def _build_pickles(root: pathlib.Path, image_size: int) -> image_splits.RawSplits:
    raw = {}
    for split in SPLITS:
        path = root / PICKLE_NAME.format(split=split)
        images, class_dict = read_cache_pickle(path)
        for wnid, members in class_dict.items():
            if any(not 0 <= i < len(images) for i in members):
                raise ValueError(f"{str(path)!r}: class_dict[{wnid!r}] indexes past image_data")
        # Each class keeps its images in class_dict order, as many as the smallest class has.
        labels = [wnid for wnid, members in class_dict.items() for _ in members]
        flat = np.array([i for members in class_dict.values() for i in members], np.int64)
        classes, positions = image_splits.group_by_class(
            labels, examples_per_class=None, what=f"mini-ImageNet {path.name}"
        )
        indices = flat[positions]
        picked = images[indices]
        if picked.shape[2:4] != (image_size, image_size):
            picked = np.stack(
                [[image_splits.to_rgb(image, image_size) for image in row] for row in picked]
            )
        raw[split] = (picked, classes, indices.astype(str))
    return raw


def miniimagenet_splits(
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    image_size: int = 84,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, ClassImages]:
    """Loads mini-ImageNet's Ravi & Larochelle split as class-indexed arrays.

    Args:
      data_dir: folder holding ``miniimagenet/`` (or that folder); None reads
        ``$MMJAX_DATA_DIR``.
      source: ``"csv"`` (images + split csv files), ``"pickle"`` (the cache pickles) or
        ``"auto"`` (the pickles when present, else the csv form).
      image_size: output height and width.
      cache_dir: see `mmjax.data.archives.cache_dir`.

    Returns:
      ``{"train", "val", "test"}`` `ClassImages` with images ``[classes, examples,
      image_size, image_size, 3]`` float32 in [0, 1] (``[64 | 16 | 20, 600, 84, 84, 3]`` for
      the full data set); class names are the ImageNet wnids.

    Raises:
      FileNotFoundError: neither form is found (names the files and where they go).
      ValueError: bad arguments, malformed files, or a class in two splits.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not one of {SOURCES}")
    image_splits.check_positive_int("image_size", image_size)
    markers = {"csv": _has_csv, "pickle": _has_pickles}
    wanted = ("pickle", "csv") if source == "auto" else (source,)
    for form in wanted:
        root = image_splits.find_dataset_dir(data_dir, FOLDER_NAMES, markers[form])
        if root is None:
            continue
        if form == "csv":
            csvs = [root / f"{s}.csv" for s in SPLITS]
            names = [row[0] for path in csvs for row in read_split_csv(path)]
            fingerprint = image_splits.fingerprint_files(csvs) + image_splits.fingerprint_folder(
                root / "images", names
            )
            build = functools.partial(_build_csv, root, image_size)
        else:
            files = [root / PICKLE_NAME.format(split=s) for s in SPLITS]
            fingerprint = image_splits.fingerprint_files(files)
            build = functools.partial(_build_pickles, root, image_size)
        splits = image_splits.cached_splits(
            f"miniimagenet-{form}",
            fingerprint,
            build,
            cache_dir=cache_dir,
            size=image_size,
        )
        image_splits.check_disjoint({s: d.class_names for s, d in splits.items()}, "mini-ImageNet")
        return splits
    raise image_splits.missing_error("mini-ImageNet", data_dir, _LAYOUT, DOWNLOAD_PAGE)
