"""tiered-ImageNet (Ren et al. 2018): 608 ImageNet classes under 34 high-level categories.

351 / 97 / 160 classes for meta-train / val / test (20 / 6 / 8 categories), 84x84 RGB.
Read from the pickles Ren et al. released (``few-shot-ssl-public``), in
``<data_dir>/tieredimagenet/``:

* ``{split}_images_png.pkl``: a list (or object array) of PNG-encoded images, each a 1-D
  uint8 array (pickled under Python 2, read with ``encoding="latin1"``);
* ``{split}_labels.pkl``: a dict with ``"label_specific"`` ([N] int, the class of each image,
  numbered within the split), and optionally ``"label_specific_str"`` (class names, indexed
  by that number), ``"label_general"`` / ``"label_general_str"`` (the category).

Class sizes differ, so every class keeps its first ``examples_per_class`` images (default:
as many as the split's smallest class has). Memory: ``classes x examples x 84 x 84 x 3``
float32, about 85 KB per image (tens of GB for the train split); pass a smaller
``examples_per_class`` (e.g. 600) on small hosts.
"""

from __future__ import annotations

import os
import pathlib
import pickle

import numpy as np

from mmjax.data import image_splits
from mmjax.data.image_splits import SPLITS
from mmjax.data.omniglot import ClassImages

NUM_CLASSES = {"train": 351, "val": 97, "test": 160}
FOLDER_NAMES = ("tieredimagenet", "tiered-imagenet", "tiered_imagenet")
IMAGES_NAME = "{split}_images_png.pkl"
LABELS_NAME = "{split}_labels.pkl"
DOWNLOAD_PAGE = "https://github.com/renmengye/few-shot-ssl-public (tiered-imagenet.tar)"
_LAYOUT = (
    "a folder 'tieredimagenet/' holding {train,val,test}_images_png.pkl and "
    "{train,val,test}_labels.pkl (Ren et al.'s release)."
)


def _has_files(path: pathlib.Path) -> bool:
    names = [n.format(split=s) for s in SPLITS for n in (IMAGES_NAME, LABELS_NAME)]
    return all((path / name).is_file() for name in names)


def _load(path: pathlib.Path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def read_labels(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    """``(label_specific [N] int64, label_specific_str or None)`` of a ``*_labels.pkl``.

    Raises:
      ValueError: the file is not a dict with ``"label_specific"``.
    """
    labels = _load(pathlib.Path(path))
    if isinstance(labels, dict):
        labels = {k.decode() if isinstance(k, bytes) else k: v for k, v in labels.items()}
    if not isinstance(labels, dict) or "label_specific" not in labels:
        keys = sorted(labels) if isinstance(labels, dict) else type(labels).__name__
        raise ValueError(f"{str(path)!r}: expected a dict with 'label_specific', got {keys}")
    names = labels.get("label_specific_str")
    if names is not None:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return np.asarray(labels["label_specific"], dtype=np.int64), names


def _build(root: pathlib.Path, image_size: int, examples_per_class) -> image_splits.RawSplits:
    raw = {}
    for split in SPLITS:
        labels, names = read_labels(root / LABELS_NAME.format(split=split))
        encoded = _load(root / IMAGES_NAME.format(split=split))
        if len(encoded) != len(labels):
            raise ValueError(
                f"{str(root / IMAGES_NAME.format(split=split))!r} has {len(encoded)} images but "
                f"{LABELS_NAME.format(split=split)} has {len(labels)} labels"
            )
        what = f"tiered-ImageNet {split}"
        classes, indices = image_splits.group_by_class(
            labels.tolist(), examples_per_class=examples_per_class, what=what
        )
        images = np.stack(
            [
                [image_splits.to_rgb(encoded[i], image_size, what=f"{what} image {i}") for i in row]
                for row in indices
            ]
        )
        if names is not None and max(classes) >= len(names):
            raise ValueError(f"{what}: label_specific {max(classes)} has no label_specific_str")
        class_names = [names[c] if names is not None else f"{split}/{c}" for c in classes]
        raw[split] = (images, class_names, indices.astype(str))
    return raw


def tieredimagenet_splits(
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = 84,
    examples_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, ClassImages]:
    """Loads tiered-ImageNet's Ren et al. split as class-indexed arrays.

    Args:
      data_dir: folder holding ``tieredimagenet/`` (or that folder); None reads
        ``$MMJAX_DATA_DIR``.
      image_size: output height and width.
      examples_per_class: images kept per class (None: the split's smallest class size).
      cache_dir: see `mmjax.data.archives.cache_dir`.

    Returns:
      ``{"train", "val", "test"}`` `ClassImages`, images ``[classes, examples, image_size,
      image_size, 3]`` float32 in [0, 1]; class names from ``label_specific_str`` (else
      ``"<split>/<label>"``).

    Raises:
      FileNotFoundError: the pickles are not found (names them and where they go).
      ValueError: bad arguments, malformed files, or a class in two splits.
    """
    image_splits.check_positive_int("image_size", image_size)
    image_splits.check_positive_int("examples_per_class", examples_per_class, allow_none=True)
    root = image_splits.find_dataset_dir(data_dir, FOLDER_NAMES, _has_files)
    if root is None:
        raise image_splits.missing_error("tiered-ImageNet", data_dir, _LAYOUT, DOWNLOAD_PAGE)
    files = [root / n.format(split=s) for s in SPLITS for n in (IMAGES_NAME, LABELS_NAME)]
    splits = image_splits.cached_splits(
        "tieredimagenet",
        image_splits.fingerprint_files(files),
        lambda: _build(root, image_size, examples_per_class),
        cache_dir=cache_dir,
        size=image_size,
        examples=examples_per_class or "min",
    )
    image_splits.check_disjoint({s: d.class_names for s, d in splits.items()}, "tiered-ImageNet")
    return splits
