"""Omniglot images: archives -> ``[classes, examples, H, W, 1]`` float32 arrays.

A class is one character of one alphabet (``"Alphabet/characterNN"``); its examples are the
20 drawings of that character by 20 drawers, sorted by file stem (``"0108_01"``). Pixels are
float32 in [0, 1] with ink = 1.0 and background = 0.0.

Note on the "small" background subsets: although they are described as disjoint,
``images_background_small2.zip`` holds the alphabets Greek and Latin with the very same
drawings as ``images_background_small1.zip``. `omniglot_splits` therefore removes from the
test split every alphabet that also occurs in the training archive (and logs it).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import os
import zipfile

import numpy as np
from PIL import Image

from mmjax.data import archives

_LOG = logging.getLogger(__name__)

SUBSETS = ("background_small1", "background_small2", "background", "evaluation")
SOURCE_IMAGE_SIZE = 105
ROTATIONS = (0, 90, 180, 270)
_CACHE_VERSION = 1

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True, eq=False)
class ClassImages:
    """Images grouped by class.

    Attributes:
      images: [classes, examples, height, width, channels] float32 in [0, 1]; channels is 1
        (Omniglot: ink = 1.0) or 3 (RGB benchmarks, `mmjax.data.image_splits`).
      class_names: [classes] names ``"Alphabet/characterNN"``; rotated copies carry a
        ``"/rot90"``, ``"/rot180"`` or ``"/rot270"`` suffix.
      drawing_ids: [classes, examples] str, the drawing's file stem (e.g. ``"0108_01"``).
    """

    images: np.ndarray
    class_names: tuple[str, ...]
    drawing_ids: np.ndarray

    def __post_init__(self):
        images, ids = self.images, self.drawing_ids
        if not isinstance(images, np.ndarray) or images.ndim != 5 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"images must be a numpy array [classes, examples, height, width, 1 | 3], got "
                f"{type(images).__name__} with shape {getattr(images, 'shape', None)}"
            )
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(self.class_names) != images.shape[0]:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but images has "
                f"{images.shape[0]} classes (shape {images.shape})"
            )
        if not isinstance(ids, np.ndarray) or ids.shape != images.shape[:2]:
            raise ValueError(
                f"drawing_ids must be a numpy array of shape {images.shape[:2]} "
                f"[classes, examples], got shape {getattr(ids, 'shape', None)}"
            )

    @property
    def num_classes(self) -> int:
        """``C`` of ``images: [C, E, H, W, 1]``."""
        return self.images.shape[0]

    @property
    def examples_per_class(self) -> int:
        """``E`` of ``images: [C, E, H, W, 1]`` (20 drawers in Omniglot)."""
        return self.images.shape[1]

    @property
    def alphabets(self) -> tuple[str, ...]:
        """[classes] alphabet of each class (the part of its name before the first '/')."""
        return class_alphabets(self.class_names)


def class_alphabets(class_names: tuple[str, ...] | ClassImages) -> tuple[str, ...]:
    """Alphabet of each class name, ``"Greek/character01/rot90"`` -> ``"Greek"``."""
    if isinstance(class_names, ClassImages):
        class_names = class_names.class_names
    return tuple(name.split("/", 1)[0] for name in class_names)


def base_class_name(name: str) -> str:
    """Character a class comes from, ``"Greek/character01/rot90"`` -> ``"Greek/character01"``."""
    return "/".join(name.split("/")[:2])


def check_subset(subset: str) -> None:
    """Raises ``ValueError`` unless ``subset`` is one of :data:`SUBSETS`."""
    if subset not in SUBSETS:
        raise ValueError(f"subset={subset!r} is not one of {SUBSETS}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")


def index_archive(archive: zipfile.ZipFile, suffix: str) -> dict[tuple[str, str], dict[str, str]]:
    """Maps (alphabet, character) -> {file stem: member name} for members ending in ``suffix``.

    Skips folders and junk (``__MACOSX/``, hidden files such as ``.DS_Store``) and files
    with another suffix; a ``suffix`` file outside ``<top>/<Alphabet>/<character>/`` is an
    error.
    """
    index: dict[tuple[str, str], dict[str, str]] = collections.defaultdict(dict)
    for member in archive.namelist():
        parts = member.split("/")
        if member.endswith("/") or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        if not member.endswith(suffix):
            continue
        if len(parts) != 4:
            raise ValueError(
                f"member {member!r} of {archive.filename!r} is not laid out as "
                f"<archive>/<Alphabet>/<character>/<drawing>{suffix}"
            )
        _, alphabet, character, file_name = parts
        index[(alphabet, character)][file_name[: -len(suffix)]] = member
    return dict(index)


def sorted_layout(
    index: dict[tuple[str, str], dict[str, str]], source: str
) -> tuple[tuple[str, ...], np.ndarray, list[list[str]]]:
    """Sorted class names, [classes, examples] drawing ids and member names of an index.

    Raises:
      ValueError: no class, or characters with different numbers of drawings.
    """
    if not index:
        raise ValueError(
            f"{source!r} holds no drawings laid out as <Alphabet>/<character>/<drawing>"
        )
    keys = sorted(index)
    counts = collections.Counter(len(index[k]) for k in keys)
    expected = counts.most_common(1)[0][0]
    for key in keys:
        if len(index[key]) != expected:
            raise ValueError(
                f"character {'/'.join(key)!r} in {source!r} has {len(index[key])} drawings, "
                f"expected {expected} like the others; every character needs the same number"
            )
    class_names = tuple(f"{a}/{c}" for a, c in keys)
    stems = [sorted(index[k]) for k in keys]
    members = [[index[k][s] for s in row] for k, row in zip(keys, stems)]
    return class_names, np.array(stems, dtype=str), members


def _decode_png(data: bytes, member: str, image_size: int) -> np.ndarray:
    """PNG bytes -> [image_size, image_size] uint8 with ink = 255."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("L")
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"cannot decode archive member {member!r} as a PNG image: {e}") from e
    return 255 - pixels


def _from_uint8(images: np.ndarray, class_names, drawing_ids) -> ClassImages:
    return ClassImages(
        images=(images.astype(np.float32) / 255.0)[..., None],
        class_names=tuple(str(n) for n in class_names),
        drawing_ids=np.asarray(drawing_ids, dtype=str),
    )


def _read_image_archive_uint8(path: PathLike, image_size: int):
    with zipfile.ZipFile(path) as archive:
        class_names, drawing_ids, members = sorted_layout(index_archive(archive, ".png"), str(path))
        images = np.stack(
            [
                np.stack([_decode_png(archive.read(m), f"{path}:{m}", image_size) for m in row])
                for row in members
            ]
        )
    return images, class_names, drawing_ids


def read_image_archive(path: PathLike, *, image_size: int = 28) -> ClassImages:
    """Decodes every PNG of an Omniglot-layout archive (no md5 check, no cache).

    Args:
      path: a zip laid out as ``<top>/<Alphabet>/<character>/<drawing>.png``.
      image_size: output height and width; 105 keeps the originals, other sizes resize
        with Lanczos antialiasing.

    Returns:
      `ClassImages`, classes sorted by (alphabet, character), drawings by file stem.
    """
    _check_positive_int("image_size", image_size)
    return _from_uint8(*_read_image_archive_uint8(path, image_size))


def load_omniglot_subset(
    subset: str,
    data_dir: PathLike | None = None,
    *,
    image_size: int = 28,
    cache_dir: PathLike | None = None,
    download: bool = False,
) -> ClassImages:
    """Loads ``images_<subset>.zip`` as `ClassImages`, through an ``.npz`` cache.

    Args:
      subset: one of ``background_small1`` (136 classes), ``background_small2`` (156),
        ``background`` (964), ``evaluation`` (659).
      data_dir: see `mmjax.data.archives.resolve_data_dir`.
      image_size: output height and width (Lanczos resize from 105).
      cache_dir: see `mmjax.data.archives.cache_dir`.
      download: fetch a missing archive.

    Returns:
      images [classes, 20, image_size, image_size, 1] float32 in [0, 1], ink = 1.
    """
    check_subset(subset)
    _check_positive_int("image_size", image_size)
    path = archives.archive_path(f"images_{subset}", data_dir, download=download)
    cache = archives.cache_file(
        f"omniglot_images-{subset}",
        archives.archive_md5(path),
        cache_dir,
        image_size=image_size,
        v=_CACHE_VERSION,
    )
    stored = archives.load_npz(cache, ("images", "class_names", "drawing_ids"))
    if stored is not None:
        return _from_uint8(stored["images"], stored["class_names"], stored["drawing_ids"])
    _LOG.info("Decoding %s at %dx%d into %s", path, image_size, image_size, cache)
    images, class_names, drawing_ids = _read_image_archive_uint8(path, image_size)
    archives.save_cache_npz(
        cache, images=images, class_names=np.array(class_names, dtype=str), drawing_ids=drawing_ids
    )
    return _from_uint8(images, class_names, drawing_ids)


def select_classes(data: ClassImages, indices) -> ClassImages:
    """Keeps the classes at ``indices`` ([n] ints), in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    return ClassImages(
        images=data.images[indices],
        class_names=tuple(data.class_names[i] for i in indices),
        drawing_ids=data.drawing_ids[indices],
    )


def rotated_class_names(class_names: tuple[str, ...]) -> tuple[str, ...]:
    """Class names after `rotate_classes`: each name, then ``/rot90``, ``/rot180``, ``/rot270``."""
    return tuple(
        name if degrees == 0 else f"{name}/rot{degrees}"
        for name in class_names
        for degrees in ROTATIONS
    )


def rotate_classes(data: ClassImages) -> ClassImages:
    """Makes 4 classes of each class: rotated by 0, 90, 180 and 270 degrees.

    Rotation is ``np.rot90`` (counter-clockwise) over the (height, width) axes. Output class
    ``4 * c + k`` is class ``c`` rotated by ``90 * k`` degrees.

    Args:
      data: images [classes, examples, H, W, 1] with H == W.

    Returns:
      images [4 * classes, examples, H, W, 1].
    """
    height, width = data.images.shape[2:4]
    if height != width:
        raise ValueError(f"rotate_classes needs square images, got {height}x{width}")
    rotated = np.stack([np.rot90(data.images, k, axes=(2, 3)) for k in range(4)], axis=1)
    return ClassImages(
        images=rotated.reshape((-1,) + data.images.shape[1:]),
        class_names=rotated_class_names(data.class_names),
        drawing_ids=np.repeat(data.drawing_ids, 4, axis=0),
    )


def split_class_indices(
    background_names: tuple[str, ...],
    test_names: tuple[str, ...],
    *,
    num_val_alphabets: int = 1,
) -> dict[str, np.ndarray]:
    """Class indices of the 'train' / 'val' splits (into background) and 'test' (into test).

    The alphabets of the background classes are sorted; the last ``num_val_alphabets`` go
    to 'val', the others to 'train'. 'test' keeps the test classes whose alphabet does not
    occur in the background (logging those it drops), so no alphabet is shared.
    """
    alphabets = sorted(set(class_alphabets(background_names)))
    if (
        isinstance(num_val_alphabets, bool)
        or not isinstance(num_val_alphabets, int)
        or not 1 <= num_val_alphabets < len(alphabets)
    ):
        raise ValueError(
            f"num_val_alphabets={num_val_alphabets!r} must be an int in [1, {len(alphabets) - 1}]: "
            f"the background holds {len(alphabets)} alphabets and 'train' needs at least one"
        )
    val_alphabets = set(alphabets[-num_val_alphabets:])
    background_alphabets = class_alphabets(background_names)
    test_alphabets = class_alphabets(test_names)
    shared = sorted(set(test_alphabets) & set(alphabets))
    test = np.array([i for i, a in enumerate(test_alphabets) if a not in shared], dtype=np.int64)
    if shared:
        _LOG.warning(
            "The test archive shares the alphabets %s with the training archive; dropping "
            "them from 'test' (%d -> %d classes) so that no alphabet is shared.",
            shared,
            len(test_names),
            len(test),
        )
    if len(test) == 0:
        raise ValueError("no test class left once alphabets shared with the background are removed")
    is_val = np.array([a in val_alphabets for a in background_alphabets])
    return {"train": np.flatnonzero(~is_val), "val": np.flatnonzero(is_val), "test": test}


def omniglot_splits(
    data_dir: PathLike | None = None,
    *,
    image_size: int = 28,
    rotations: bool = True,
    num_val_alphabets: int = 1,
    cache_dir: PathLike | None = None,
    download: bool = False,
    background: str = "background_small1",
    evaluation: str = "background_small2",
) -> dict[str, ClassImages]:
    """Train / val / test classes from two archives, split by alphabet.

    By default the two small background subsets (the ones shipped offline); pass
    ``background="background", evaluation="evaluation"`` for the full Omniglot split
    (30 background / 20 evaluation alphabets; ``download=True`` fetches them).

    'train' and 'val' split the alphabets of ``background_small1`` (sorted; the last
    ``num_val_alphabets`` are 'val'); 'test' is ``background_small2`` without the alphabets
    it shares with ``background_small1`` (Greek and Latin, identical drawings), i.e. 106
    classes. With ``rotations`` each train class becomes 4 classes (see `rotate_classes`);
    'val' and 'test' are never rotated.

    Returns:
      {'train', 'val', 'test'} -> `ClassImages` with 20 examples per class.
    """
    kwargs = dict(image_size=image_size, cache_dir=cache_dir, download=download)
    train_val = load_omniglot_subset(background, data_dir, **kwargs)
    test = load_omniglot_subset(evaluation, data_dir, **kwargs)
    indices = split_class_indices(
        train_val.class_names, test.class_names, num_val_alphabets=num_val_alphabets
    )
    splits = {
        "train": select_classes(train_val, indices["train"]),
        "val": select_classes(train_val, indices["val"]),
        "test": select_classes(test, indices["test"]),
    }
    if rotations:
        splits["train"] = rotate_classes(splits["train"])
    return splits
