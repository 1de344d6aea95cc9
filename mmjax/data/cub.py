"""CUB-200-2011 (Wah et al. 2011) with the few-shot class split of Chen et al. (2019).

200 bird species, 11,788 images (about 60 per class, varying sizes), resized here to
``image_size`` (84 by default). Split (Chen et al., "A Closer Look at Few-shot
Classification", ICLR 2019, ``filelists/CUB/write_CUB_filelist.py``): with the classes in
their official order (class ids 1..200, index ``i = id - 1``), index ``i % 2 == 0`` is
meta-train (100 classes), ``i % 4 == 1`` meta-val (50), ``i % 4 == 3`` meta-test (50);
torchmeta's ``datasets/assets/cub/test.json`` lists the same test classes (ids 4, 8, ...,
200). Every class keeps its first ``examples_per_class`` images (default: as many as the
split's smallest class has).

Two sources:

* ``source="archive"``: the official archive ``CUB_200_2011.tgz`` extracted in ``data_dir``
  (``CUB_200_2011/classes.txt`` rows ``<id> <name>``, ``images.txt`` rows ``<image id>
  <class folder>/<file>.jpg``, ``image_class_labels.txt`` rows ``<image id> <class id>``,
  and ``images/<class folder>/<file>.jpg``);
* ``source="tfds"``: TFDS ``caltech_birds2011`` (its ``train`` + ``test`` splits; ``label`` is
  the class id - 1).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from mmjax.data import image_splits
from mmjax.data.image_splits import SPLITS
from mmjax.data.omniglot import ClassImages

NUM_CLASSES = {"train": 100, "val": 50, "test": 50}
SOURCES = ("auto", "archive", "tfds")
FOLDER_NAMES = ("CUB_200_2011", "cub/CUB_200_2011", "cub")
DOWNLOAD_PAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)"
_LAYOUT = (
    "the extracted official archive, CUB_200_2011/ with classes.txt, images.txt, "
    "image_class_labels.txt and images/<class>/<image>.jpg, in data_dir (or source='tfds')."
)
_FILES = ("classes.txt", "images.txt", "image_class_labels.txt")


def cub_split_of(class_index: int) -> str:
    """Chen et al.'s split of the class with 0-based index ``class_index`` (= class id - 1)."""
    if not 0 <= class_index < 200:
        raise ValueError(f"class_index={class_index} is not in [0, 200)")
    return "train" if class_index % 2 == 0 else ("val" if class_index % 4 == 1 else "test")


def _has_archive(path: pathlib.Path) -> bool:
    return all((path / name).is_file() for name in _FILES) and (path / "images").is_dir()


def _read_table(path: pathlib.Path) -> dict[int, str]:
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{str(path)!r} line {number}: expected '<id> <value>', got {line!r}")
        table[int(parts[0])] = parts[1].strip()
    return table


def _archive_examples(root: pathlib.Path) -> list[tuple[int, str, str, str]]:
    """``[(class index, class name, image id, path)]`` of the official archive layout."""
    classes = _read_table(root / "classes.txt")
    images = _read_table(root / "images.txt")
    labels = _read_table(root / "image_class_labels.txt")
    examples = []
    for image_id, relative in sorted(images.items()):
        if image_id not in labels:
            raise ValueError(f"image_class_labels.txt has no row for image {image_id}")
        class_id = int(labels[image_id])
        if class_id not in classes:
            raise ValueError(f"classes.txt has no class {class_id} (image {image_id})")
        path = root / "images" / relative
        examples.append((class_id - 1, classes[class_id], str(image_id), str(path)))
    return examples


def _tfds_examples(data_dir, download: bool) -> list[tuple[int, str, str, object]]:
    examples = []
    for tfds_split in ("train", "test"):
        source = image_splits.tfds_source(
            "caltech_birds2011", tfds_split, data_dir=data_dir, download=download,
            download_page=DOWNLOAD_PAGE,
        )  # fmt: skip
        for index in range(len(source)):
            example = source[index]
            label = int(example["label"])
            name = example.get("label_name", "")
            name = name.decode() if isinstance(name, bytes) else str(name)
            name = f"{label + 1:03d}.{name}"
            examples.append((label, name, f"{tfds_split}/{index}", example["image"]))
    return examples


def _build(examples, image_size: int, examples_per_class) -> image_splits.RawSplits:
    raw = {}
    for split in SPLITS:
        mine = [e for e in examples if cub_split_of(e[0]) == split]
        names = {e[0]: e[1] for e in mine}
        classes, indices = image_splits.group_by_class(
            [e[0] for e in mine], examples_per_class=examples_per_class, what=f"CUB {split}"
        )
        images = np.stack(
            [
                [image_splits.to_rgb(mine[i][3], image_size, what=f"CUB {mine[i][2]}") for i in row]
                for row in indices
            ]
        )
        ids = np.array([[mine[i][2] for i in row] for row in indices])
        raw[split] = (images, [names[c] for c in classes], ids)
    return raw


def cub_splits(
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    image_size: int = 84,
    examples_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> dict[str, ClassImages]:
    """Loads CUB-200-2011 with Chen et al.'s 100 / 50 / 50 class split.

    Args:
      data_dir: folder holding ``CUB_200_2011/`` (None: ``$MMJAX_DATA_DIR``); for
        ``source="tfds"``, the TFDS data folder (None: TFDS's default).
      source: ``"archive"``, ``"tfds"`` or ``"auto"`` (the archive when found, else TFDS).
      image_size: output height and width.
      examples_per_class: images kept per class (None: the split's smallest class size).
      cache_dir: see `mmjax.data.archives.cache_dir`.
      download: with TFDS, let it download and prepare ``caltech_birds2011``.

    Returns:
      ``{"train", "val", "test"}`` `ClassImages`, images ``[100 | 50 | 50, examples,
      image_size, image_size, 3]`` float32 in [0, 1]; class names ``"001.Black_footed_..."``.

    Raises:
      FileNotFoundError: ``source="archive"`` and the archive layout is not found.
      ValueError: bad arguments or malformed files.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not one of {SOURCES}")
    image_splits.check_positive_int("image_size", image_size)
    image_splits.check_positive_int("examples_per_class", examples_per_class, allow_none=True)
    root = None
    if source in ("auto", "archive"):
        root = image_splits.find_dataset_dir(data_dir, FOLDER_NAMES, _has_archive)
        if root is None and source == "archive":
            raise image_splits.missing_error("CUB-200-2011", data_dir, _LAYOUT, DOWNLOAD_PAGE)
    if root is not None:
        tables = [root / name for name in _FILES]
        names = [v for v in _read_table(root / "images.txt").values()]
        fingerprint = image_splits.fingerprint_files(tables) + image_splits.fingerprint_folder(
            root / "images", names
        )
        kind = "cub-archive"
        build = lambda: _build(_archive_examples(root), image_size, examples_per_class)
    else:
        tfds_dir = data_dir if source == "tfds" else None
        fingerprint = image_splits.tfds_fingerprint("caltech_birds2011", tfds_dir)
        kind = "cub-tfds"

        def build():
            try:
                examples = _tfds_examples(tfds_dir, download)
            except FileNotFoundError as e:
                if source == "tfds":
                    raise
                archive = image_splits.missing_error(
                    "CUB-200-2011", data_dir, _LAYOUT, DOWNLOAD_PAGE
                )
                raise FileNotFoundError(f"{archive} Nor is TFDS's: {e}") from e
            return _build(examples, image_size, examples_per_class)

    splits = image_splits.cached_splits(
        kind,
        fingerprint,
        build,
        cache_dir=cache_dir,
        size=image_size,
        examples=examples_per_class or "min",
    )
    image_splits.check_disjoint({s: d.class_names for s, d in splits.items()}, "CUB")
    return splits
