"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018) from TFDS ``cifar100``.

Both use all 600 images of each CIFAR-100 class (TFDS ``train`` + ``test``, 500 + 100),
32x32 RGB, and differ only in which classes go to which split:

* CIFAR-FS: 64 / 16 / 20 fine classes drawn at random, `CIFAR_FS_CLASSES`;
* FC100: 60 / 20 / 20 fine classes, whole superclasses (12 / 4 / 4), `FC100_SUPERCLASSES`,
  so that meta-test classes share no superclass with meta-train ones.

Label ids are TFDS's (CIFAR-100's ``fine_label_names.txt`` / ``coarse_label_names.txt``
order, which is alphabetical: `CIFAR100_FINE_NAMES`, `CIFAR100_COARSE_NAMES`); when the
prepared data set carries its label names they are checked against these, and FC100 checks
every example's ``coarse_label`` against `CIFAR100_SUPERCLASSES`.
"""

from __future__ import annotations

import os

import numpy as np

from mmjax.data import image_splits
from mmjax.data.image_splits import SPLITS
from mmjax.data.omniglot import ClassImages

DOWNLOAD_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html (TFDS 'cifar100')"

# CIFAR-100's 20 superclasses and their 5 classes each (Krizhevsky 2009, the data set's own
# coarse labels).
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_COARSE_NAMES: tuple[str, ...] = tuple(sorted(CIFAR100_SUPERCLASSES))
CIFAR100_FINE_NAMES: tuple[str, ...] = tuple(
    sorted(c for members in CIFAR100_SUPERCLASSES.values() for c in members)
)
SUPERCLASS_OF: dict[str, str] = {
    c: coarse for coarse, members in CIFAR100_SUPERCLASSES.items() for c in members
}

# CIFAR-FS split of Bertinetto et al., "Meta-learning with differentiable closed-form
# solvers" (ICLR 2019): the files data/cifar-fs/splits/bertinetto/{val,test}.txt of
# https://github.com/bertinetto/r2d2 (the same lists as torchmeta's
# datasets/assets/cifar100/cifar-fs/*.json); train is the 64 remaining classes.
_CIFAR_FS_VAL = (
    "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea",
    "camel", "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
)  # fmt: skip
_CIFAR_FS_TEST = (
    "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard",
    "plain", "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle",
    "pickup_truck", "rocket",
)  # fmt: skip
CIFAR_FS_CLASSES: dict[str, tuple[str, ...]] = {
    "train": tuple(c for c in CIFAR100_FINE_NAMES if c not in _CIFAR_FS_VAL + _CIFAR_FS_TEST),
    "val": tuple(sorted(_CIFAR_FS_VAL)),
    "test": tuple(sorted(_CIFAR_FS_TEST)),
}

# FC100 superclass split of Oreshkin et al., "TADAM: Task dependent adaptive metric for
# improved few-shot learning" (NeurIPS 2018), superclass ids {1, 2, 3, 4, 5, 6, 9, 10, 15, 17,
# 18, 19} / {8, 11, 13, 16} / {0, 7, 12, 14}; checked against torchmeta's
# datasets/assets/cifar100/fc100/{train,test}.json (val is the remaining 4).
FC100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    split: tuple(CIFAR100_COARSE_NAMES[i] for i in ids)
    for split, ids in (
        ("train", (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19)),
        ("val", (8, 11, 13, 16)),
        ("test", (0, 7, 12, 14)),
    )
}
FC100_CLASSES: dict[str, tuple[str, ...]] = {
    split: tuple(sorted(c for s in supers for c in CIFAR100_SUPERCLASSES[s]))
    for split, supers in FC100_SUPERCLASSES.items()
}


def _read_cifar100(data_dir, download: bool, check_coarse: bool):
    """``{fine name: [(id, [32, 32, 3] uint8)]}`` over TFDS cifar100 train + test."""
    by_class: dict[str, list] = {name: [] for name in CIFAR100_FINE_NAMES}
    for tfds_split in ("train", "test"):
        source = image_splits.tfds_source(
            "cifar100", tfds_split, data_dir=data_dir, download=download,
            download_page=DOWNLOAD_PAGE,
        )  # fmt: skip
        for key, expected in (("label", CIFAR100_FINE_NAMES), ("coarse_label", None)):
            names = image_splits.label_names(source, key)
            if names is not None and expected is not None and tuple(names) != expected:
                raise ValueError(f"TFDS cifar100 {key!r} names differ from CIFAR-100's: {names}")
        for index in range(len(source)):
            example = source[index]
            missing = {"image", "label", "coarse_label"} - set(example)
            if missing:
                raise ValueError(f"TFDS cifar100[{tfds_split}][{index}] lacks {sorted(missing)}")
            fine = CIFAR100_FINE_NAMES[int(example["label"])]
            if check_coarse:
                coarse = CIFAR100_COARSE_NAMES[int(example["coarse_label"])]
                if coarse != SUPERCLASS_OF[fine]:
                    raise ValueError(
                        f"TFDS cifar100[{tfds_split}][{index}]: class {fine!r} has coarse_label "
                        f"{coarse!r}, but CIFAR-100 puts it in {SUPERCLASS_OF[fine]!r}"
                    )
            by_class[fine].append((f"{tfds_split}/{index}", example["image"]))
    return by_class


def _cifar_splits(
    kind: str,
    classes: dict[str, tuple[str, ...]],
    *,
    data_dir,
    image_size: int,
    examples_per_class: int | None,
    cache_dir,
    download: bool,
) -> dict[str, ClassImages]:
    image_splits.check_positive_int("image_size", image_size)
    image_splits.check_positive_int("examples_per_class", examples_per_class, allow_none=True)

    def build() -> image_splits.RawSplits:
        by_class = _read_cifar100(data_dir, download, check_coarse=kind == "fc100")
        raw = {}
        for split in SPLITS:
            names = classes[split]
            labels = [name for name in names for _ in by_class[name]]
            examples = [item for name in names for item in by_class[name]]
            found, indices = image_splits.group_by_class(
                labels, examples_per_class=examples_per_class, what=f"{kind} {split}"
            )
            if len(found) != len(names):
                absent = sorted(set(names) - set(found))
                raise ValueError(f"{kind} {split}: no image of the classes {absent}")
            images = np.stack(
                [[image_splits.to_rgb(examples[i][1], image_size) for i in row] for row in indices]
            )
            ids = np.array([[examples[i][0] for i in row] for row in indices])
            raw[split] = (images, found, ids)
        return raw

    return image_splits.cached_splits(
        kind,
        image_splits.tfds_fingerprint("cifar100", data_dir),
        build,
        cache_dir=cache_dir,
        size=image_size,
        examples=examples_per_class or "min",
    )


def cifar_fs_splits(
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = 32,
    examples_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> dict[str, ClassImages]:
    """CIFAR-FS: `CIFAR_FS_CLASSES` of TFDS ``cifar100`` as class-indexed arrays.

    Args:
      data_dir: TFDS data folder (None: TFDS's default).
      image_size: output height and width (32 = CIFAR's own).
      examples_per_class: images kept per class (None: all 600).
      cache_dir: see `mmjax.data.archives.cache_dir`.
      download: let TFDS download and prepare ``cifar100`` (ArrayRecord) when missing.

    Returns:
      ``{"train", "val", "test"}`` `ClassImages`, images ``[64 | 16 | 20, 600, 32, 32, 3]``
      float32 in [0, 1], classes in the order of `CIFAR_FS_CLASSES`.
    """
    return _cifar_splits(
        "cifar_fs",
        CIFAR_FS_CLASSES,
        data_dir=data_dir,
        image_size=image_size,
        examples_per_class=examples_per_class,
        cache_dir=cache_dir,
        download=download,
    )


def fc100_splits(
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = 32,
    examples_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> dict[str, ClassImages]:
    """FC100: the classes of `FC100_SUPERCLASSES` of TFDS ``cifar100`` (see `cifar_fs_splits`).

    Returns:
      ``{"train", "val", "test"}`` `ClassImages`, images ``[60 | 20 | 20, 600, 32, 32, 3]``.

    Raises:
      ValueError: an example's ``coarse_label`` disagrees with `CIFAR100_SUPERCLASSES`.
    """
    return _cifar_splits(
        "fc100",
        FC100_CLASSES,
        data_dir=data_dir,
        image_size=image_size,
        examples_per_class=examples_per_class,
        cache_dir=cache_dir,
        download=download,
    )
