"""Shared pieces of the RGB few-shot benchmarks: locating, decoding, grouping and caching.

Every benchmark loader (`mmjax.data.miniimagenet`, `mmjax.data.tieredimagenet`,
`mmjax.data.cifar_fewshot`, `mmjax.data.cub`) returns ``{"train", "val", "test"}`` of
`ClassImages` with ``images: [classes, examples, H, W, 3]`` float32 in [0, 1], the layout
of Omniglot's ``[C, 20, 28, 28, 1]``, so `mmjax.data.episodes` samples them unchanged.

Decoded splits are cached as one ``.npz`` (uint8 pixels, so 4x smaller than float32) whose
name carries a fingerprint of the source and every parameter that changes the content
(`mmjax.data.archives.cache_file`): a changed source or parameter builds a new file.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import os
import pathlib
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from PIL import Image

from mmjax.data import archives
from mmjax.data.omniglot import ClassImages

_LOG = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CACHE_VERSION = 1

# split -> (uint8 images [C, E, S, S, 3], class names [C], example ids [C, E])
RawSplits = dict[str, tuple[np.ndarray, Sequence[str], np.ndarray]]


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is an int >= 1 (or None)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")


def find_dataset_dir(
    data_dir: str | os.PathLike | None, folder_names: Sequence[str], marker: Callable
) -> pathlib.Path | None:
    """The folder holding a data set: ``data_dir`` itself or ``data_dir/<one of folder_names>``.

    Args:
      data_dir: a folder; None reads ``$MMJAX_DATA_DIR`` (None if unset too).
      folder_names: the data set's usual folder names, e.g. ``("miniimagenet", "mini-imagenet")``.
      marker: ``marker(path) -> bool``, True for a folder holding the data set's files.

    Returns:
      The first candidate for which ``marker`` is True, else None.
    """
    if data_dir is None:
        data_dir = os.environ.get(archives.DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    root = pathlib.Path(data_dir).expanduser()
    for candidate in [root] + [root / name for name in folder_names]:
        if candidate.is_dir() and marker(candidate):
            return candidate
    return None


def missing_error(dataset: str, data_dir, layout: str, download_page: str) -> FileNotFoundError:
    """A ``FileNotFoundError`` naming the files expected, where they go and where to get them."""
    where = data_dir if data_dir is not None else os.environ.get(archives.DATA_DIR_ENV)
    return FileNotFoundError(
        f"{dataset} not found under data_dir={str(where)!r} (the argument, else "
        f"${archives.DATA_DIR_ENV}). Expected: {layout} Get it from {download_page} (it cannot "
        "be downloaded automatically)."
    )


def to_rgb(image, image_size: int, *, what: str = "image") -> np.ndarray:
    """Decodes / converts one image to ``[image_size, image_size, 3]`` uint8 (Lanczos resize).

    Args:
      image: encoded bytes (PNG/JPEG; a uint8 numpy buffer of them counts as bytes when 1-D),
        a file path, or a decoded ``[H, W]`` / ``[H, W, 1 | 3 | 4]`` uint8 array.
      image_size: output height and width.
      what: names the image in errors.
    """
    try:
        if isinstance(image, (bytes, bytearray)) or (
            isinstance(image, np.ndarray) and image.ndim == 1
        ):
            pil = Image.open(io.BytesIO(bytes(image)))
        elif isinstance(image, (str, os.PathLike)):
            pil = Image.open(image)
        else:
            array = np.asarray(image)
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
                raise ValueError(f"shape {array.shape} is not [H, W] or [H, W, 1 | 3 | 4]")
            pil = Image.fromarray(array.astype(np.uint8))
        pil = pil.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"{what}: cannot decode it as an image ({e})") from e
    if pil.size != (image_size, image_size):
        pil = pil.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(pil, dtype=np.uint8)


def group_by_class(
    labels: Sequence[Hashable], *, examples_per_class: int | None, what: str
) -> tuple[list, np.ndarray]:
    """Groups example indices by label: ``(classes, indices [classes, examples])``.

    Classes are sorted; each keeps its first ``examples_per_class`` examples in source order
    (None: as many as the smallest class has, logged when that truncates a class).

    Raises:
      ValueError: no example, or a class with fewer than ``examples_per_class`` examples.
    """
    by_class: dict = collections.defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    if not by_class:
        raise ValueError(f"{what}: no example found")
    classes = sorted(by_class)
    sizes = {c: len(by_class[c]) for c in classes}
    smallest = min(sizes.values())
    if examples_per_class is None:
        examples_per_class = smallest
        if max(sizes.values()) > smallest:
            _LOG.info("%s: keeping the first %d examples of each class", what, smallest)
    short = [c for c in classes if sizes[c] < examples_per_class]
    if short:
        raise ValueError(
            f"{what}: examples_per_class={examples_per_class} but {len(short)} classes have "
            f"fewer (e.g. {short[0]!r} has {sizes[short[0]]}); pass a smaller examples_per_class"
        )
    return classes, np.array([by_class[c][:examples_per_class] for c in classes], np.int64)


def check_disjoint(class_names: dict[str, Sequence[str]], what: str) -> None:
    """Raises ``ValueError`` when a class name occurs in two splits."""
    seen: dict[str, str] = {}
    for split, names in class_names.items():
        for name in names:
            if name in seen and seen[name] != split:
                raise ValueError(f"{what}: class {name!r} is in both {seen[name]!r} and {split!r}")
            seen[name] = split


def fingerprint_files(paths: Sequence[str | os.PathLike]) -> str:
    """md5 of the files' contents (memoised per path, size and mtime), as one hex digest."""
    digest = hashlib.md5()
    for path in paths:
        digest.update(archives.archive_md5(path).encode())
    return digest.hexdigest()


def fingerprint_folder(root: str | os.PathLike, names: Sequence[str]) -> str:
    """md5 of each file's relative name, size and mtime (image folders too large to hash)."""
    digest = hashlib.md5()
    root = pathlib.Path(root)
    for name in names:
        stat = (root / name).stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_splits(
    kind: str,
    fingerprint: str | None,
    build: Callable[[], RawSplits],
    *,
    cache_dir: str | os.PathLike | None = None,
    **params,
) -> dict[str, ClassImages]:
    """Builds the splits once and caches them; later calls with the same key read the cache.

    Args:
      kind: what is cached, e.g. ``"miniimagenet-pickle"``.
      fingerprint: md5 of the source (see `fingerprint_files`); None disables the cache.
      build: ``() -> {split: (uint8 images [C, E, S, S, 3], class names, ids [C, E])}``.
      cache_dir: see `mmjax.data.archives.cache_dir`.
      **params: every parameter that changes the content (part of the file name).

    Returns:
      ``{split: ClassImages}`` with images float32 in [0, 1].
    """
    keys = tuple(f"{split}_{part}" for split in SPLITS for part in ("images", "names", "ids"))
    path = None
    arrays = None
    if fingerprint is not None:
        path = archives.cache_file(kind, fingerprint, cache_dir, v=CACHE_VERSION, **params)
        arrays = archives.load_npz(path, keys)
    if arrays is None:
        raw = build()
        arrays = {}
        for split in SPLITS:
            images, names, ids = raw[split]
            arrays[f"{split}_images"] = np.asarray(images, np.uint8)
            arrays[f"{split}_names"] = np.asarray(list(names), dtype=np.str_)
            arrays[f"{split}_ids"] = np.asarray(ids, dtype=np.str_)
        if path is not None:
            archives.atomic_save_npz(path, **arrays)
    return {
        split: ClassImages(
            images=arrays[f"{split}_images"].astype(np.float32) / np.float32(255.0),
            class_names=tuple(str(n) for n in arrays[f"{split}_names"]),
            drawing_ids=arrays[f"{split}_ids"],
        )
        for split in SPLITS
    }


def tfds_source(name: str, split: str, *, data_dir, download: bool, download_page: str):
    """``tfds.data_source(name, split=split)``, with a clear error when it is not prepared.

    The data set must be prepared in ArrayRecord format (``download=True`` does it, or
    ``tfds build <name> --file_format=array_record``); no TensorFlow is needed to read it.
    """
    import tensorflow_datasets as tfds  # Imported lazily: slow, and only needed here.

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    except (FileNotFoundError, AssertionError, ValueError, OSError) as e:
        raise FileNotFoundError(
            f"TFDS data set {name!r} (split {split!r}) is not prepared under data_dir="
            f"{data_dir!r} ({type(e).__name__}: {e}). Pass download=True (data.download=True) "
            f"to let TFDS download and prepare it, or run `tfds build {name} "
            f"--file_format=array_record` (source: {download_page})."
        ) from e


def tfds_fingerprint(name: str, data_dir) -> str | None:
    """Fingerprint of a prepared TFDS data set's files (None when there is no folder to read).

    None disables the cache, e.g. under ``tfds.testing.mock_data``, whose data is generated.
    """
    import tensorflow_datasets as tfds

    try:
        folder = pathlib.Path(tfds.builder(name, data_dir=data_dir).data_dir)
    except Exception:  # noqa: BLE001 - any failure just means "do not cache"
        return None
    if not folder.is_dir():
        return None
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return fingerprint_folder(folder, files) if files else None


def label_names(source, key: str) -> list[str] | None:
    """The names of a TFDS ``ClassLabel`` feature, or None when it has none (mock data)."""
    try:
        names = list(source.dataset_info.features[key].names)
    except (AttributeError, KeyError, TypeError):
        return None
    return None if all(n.isdigit() for n in names) else names
