"""Pen-stroke modality of Omniglot: stroke files -> fixed-length offset sequences.

A stroke file is ``START``, then strokes, each a run of ``x,y,t`` lines closed by ``BREAK``
(every official file ends with ``BREAK``). x and y are image pixel coordinates with y
negated, t is milliseconds since the drawing began: pixel (row, col) = (-y, x) in the
105x105 image.

Sequence encoding (`strokes_to_sequence`), ``[length, 3]`` rows ``(dx, dy, pen_lift)``:
  * the drawing is resampled to ``length`` points (`resample_strokes`): every stroke gets
    at least one point and the others are shared among strokes in proportion to their
    arc length (``mode="arclength"``) or duration (``mode="time"``), evenly spaced in that
    measure within each stroke;
  * ``dx, dy`` is the offset from the previous point (0 for the first point) divided by
    the larger side of the drawing's bounding box in pixels (at least 1 px), so the
    re-integrated drawing fits a unit box; this scale is unchanged by 90-degree rotations;
  * ``pen_lift`` is 1.0 on the first point of every stroke (the offset into it is a pen-up
    move) and 0.0 elsewhere; the first row always has ``pen_lift = 1``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import zipfile

import numpy as np

from mmjax.data import archives, omniglot

_LOG = logging.getLogger(__name__)
_CACHE_VERSION = 1
MODES = ("arclength", "time")

PathLike = str | os.PathLike


def parse_strokes(text: str, *, source: str = "<string>") -> list[np.ndarray]:
    """Parses an Omniglot stroke file.

    Args:
      text: the file's content.
      source: name used in error messages (e.g. the archive member).

    Returns:
      One [n_points, 3] float64 array (x, y, t) per stroke, in drawing order.

    Raises:
      ValueError: naming ``source``: no ``START`` first line, no ``BREAK`` at all, an empty
        stroke, a last stroke not closed by ``BREAK``, or a malformed line (with its number).
    """
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or lines[first].strip() != "START":
        got = "an empty file" if first is None else repr(lines[first].strip()[:40])
        raise ValueError(f"{source}: a stroke file must begin with a line 'START', got {got}")
    strokes: list[np.ndarray] = []
    current: list[list[float]] = []
    for number, raw in enumerate(lines[first + 1 :], start=first + 2):
        line = raw.strip()
        if not line:
            continue
        if line == "BREAK":
            if not current:
                raise ValueError(
                    f"{source}, line {number}: empty stroke (BREAK with no point before it)"
                )
            strokes.append(np.asarray(current, dtype=np.float64))
            current = []
            continue
        try:
            point = [float(field) for field in line.split(",")]
        except ValueError:
            point = []
        if len(point) != 3 or not all(math.isfinite(v) for v in point):
            raise ValueError(
                f"{source}, line {number}: malformed line {line[:60]!r}; "
                "expected 'x,y,t' or 'BREAK'"
            )
        current.append(point)
    if not strokes:
        raise ValueError(
            f"{source}: no 'BREAK' line; every stroke must be closed by a line 'BREAK'"
        )
    if current:
        raise ValueError(
            f"{source}: the last stroke ({len(current)} points) is not closed by a line 'BREAK'"
        )
    return strokes


def _check_strokes(strokes) -> None:
    if not isinstance(strokes, (list, tuple)) or not strokes:
        raise ValueError(
            f"strokes must be a non-empty list of [n_points, 3] arrays, got {strokes!r:.80}"
        )
    for i, stroke in enumerate(strokes):
        shape = np.shape(stroke)
        if len(shape) != 2 or shape[0] < 1 or shape[1] != 3:
            raise ValueError(
                f"strokes[{i}] has shape {shape}; expected [n_points >= 1, 3] (x, y, t)"
            )


def _check_length_mode(length: int, mode: str) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length={length!r} must be an int >= 2")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")


def _stroke_parameter(stroke: np.ndarray, mode: str) -> np.ndarray:
    """[n] non-decreasing position along the stroke: arc length or time since its start."""
    if mode == "arclength":
        steps = np.linalg.norm(np.diff(stroke[:, :2], axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(steps)])
    return np.maximum.accumulate(stroke[:, 2] - stroke[0, 2])


def _allocate(measures: np.ndarray, length: int) -> np.ndarray:
    """[strokes] ints >= 1 summing to ``length``, extra points shared by largest remainder."""
    spare = length - len(measures)
    total = measures.sum()
    weights = measures / total if total > 0 else np.full(len(measures), 1.0 / len(measures))
    exact = spare * weights
    counts = np.floor(exact).astype(np.int64)
    leftover = spare - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:leftover]] += 1
    return counts + 1


def resample_strokes(
    strokes: list[np.ndarray], *, length: int = 64, mode: str = "arclength"
) -> tuple[np.ndarray, np.ndarray]:
    """Resamples a drawing to ``length`` points (see the module docstring).

    Args:
      strokes: list of [n_points, 3] arrays (x, y, t), as from `parse_strokes`.
      length: number of output points, at least the number of strokes.
      mode: ``"arclength"`` or ``"time"``.

    Returns:
      xy: [length, 2] float64 (x, y) of the points, in drawing order.
      stroke_start: [length] bool, True on the first point of each stroke.
    """
    _check_strokes(strokes)
    _check_length_mode(length, mode)
    if len(strokes) > length:
        raise ValueError(
            f"the drawing has {len(strokes)} strokes, more than length={length} points; "
            "every stroke needs at least one point"
        )
    strokes = [np.asarray(s, dtype=np.float64) for s in strokes]
    params = [_stroke_parameter(s, mode) for s in strokes]
    counts = _allocate(np.array([p[-1] for p in params]), length)
    xy, starts = [], []
    for stroke, param, count in zip(strokes, params, counts):
        keep = np.concatenate([[True], np.diff(param) > 0])  # np.interp needs increasing xp.
        param, points = param[keep], stroke[keep, :2]
        targets = np.linspace(0.0, param[-1], count) if count > 1 else np.zeros(1)
        xy.append(np.stack([np.interp(targets, param, points[:, d]) for d in (0, 1)], axis=1))
        starts.append(np.arange(count) == 0)
    return np.concatenate(xy), np.concatenate(starts)


def strokes_to_sequence(
    strokes: list[np.ndarray], *, length: int = 64, mode: str = "arclength"
) -> np.ndarray:
    """Encodes a drawing as [length, 3] float32 rows (dx, dy, pen_lift) (see module docstring)."""
    xy, starts = resample_strokes(strokes, length=length, mode=mode)
    every = np.concatenate([np.asarray(s)[:, :2] for s in strokes])
    scale = max(float(np.max(every.max(axis=0) - every.min(axis=0))), 1.0)
    offsets = np.diff(xy, axis=0, prepend=xy[:1]) / scale
    return np.concatenate([offsets, starts[:, None]], axis=1).astype(np.float32)


def strokes_to_points(
    strokes: list[np.ndarray], *, length: int = 64, mode: str = "arclength"
) -> np.ndarray:
    """[length, 2] float64 (row, col) pixel coordinates of the resampled points: (-y, x)."""
    xy, _ = resample_strokes(strokes, length=length, mode=mode)
    return np.stack([-xy[:, 1], xy[:, 0]], axis=1)


def _check_quarter_turns(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k={k!r} must be an int number of counter-clockwise quarter turns")


def rotate_strokes(strokes: list[np.ndarray], k: int, *, image_size: int = 105) -> list[np.ndarray]:
    """Rotates absolute stroke coordinates like ``np.rot90(image, k)`` rotates the image.

    One counter-clockwise quarter turn maps pixel (row, col) to (image_size - 1 - col, row),
    i.e. (x, y) to (-y, x - (image_size - 1)). Times are unchanged.
    """
    _check_quarter_turns(k)
    rotated = []
    for stroke in strokes:
        x, y, t = np.asarray(stroke, dtype=np.float64).T
        for _ in range(k % 4):
            x, y = -y, x - (image_size - 1)
        rotated.append(np.stack([x, y, t], axis=1))
    return rotated


def rotate_sequences(sequences: np.ndarray, k: int) -> np.ndarray:
    """Rotates (dx, dy, pen_lift) sequences [..., 3] like ``np.rot90(image, k)`` rotates images.

    Each counter-clockwise quarter turn maps (dx, dy) to (-dy, dx); pen_lift is unchanged.
    """
    _check_quarter_turns(k)
    dx, dy, pen = sequences[..., 0], sequences[..., 1], sequences[..., 2]
    for _ in range(k % 4):
        dx, dy = -dy, dx
    return np.stack([dx, dy, pen], axis=-1).astype(sequences.dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class StrokeSequences:
    """Stroke sequences grouped by class, aligned with `omniglot.ClassImages`.

    Attributes:
      sequences: [classes, examples, length, 3] float32 (dx, dy, pen_lift); zeros where
        ``mask`` is False.
      mask: [classes, examples] bool, False where the stroke file is missing or unparseable.
      class_names: [classes] ``"Alphabet/characterNN"`` (plus ``"/rot90"`` etc.).
      drawing_ids: [classes, examples] str file stems.
    """

    sequences: np.ndarray
    mask: np.ndarray
    class_names: tuple[str, ...]
    drawing_ids: np.ndarray

    def __post_init__(self):
        seqs = self.sequences
        if not isinstance(seqs, np.ndarray) or seqs.ndim != 4 or seqs.shape[-1] != 3:
            raise ValueError(
                f"sequences must be a numpy array [classes, examples, length, 3], got shape "
                f"{getattr(seqs, 'shape', None)}"
            )
        object.__setattr__(self, "class_names", tuple(self.class_names))
        for name in ("mask", "drawing_ids"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != seqs.shape[:2]:
                raise ValueError(
                    f"{name} must have shape {seqs.shape[:2]} [classes, examples], got "
                    f"{getattr(value, 'shape', None)}"
                )
        if len(self.class_names) != seqs.shape[0]:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for {seqs.shape[0]} classes"
            )

    @property
    def num_classes(self) -> int:
        """``C`` of ``sequences: [C, E, length, 3]``."""
        return self.sequences.shape[0]

    @property
    def examples_per_class(self) -> int:
        """``E`` of ``sequences: [C, E, length, 3]``."""
        return self.sequences.shape[1]


def _report_missing(source: str, mask: np.ndarray, problems: list[str]) -> None:
    missing = int((~mask).sum())
    if missing:
        detail = "; ".join(problems[:3]) if problems else "see the log of the first load"
        _LOG.warning(
            "%s: %d of %d drawings have no usable stroke file (mask=False), e.g. %s",
            source,
            missing,
            mask.size,
            detail,
        )


def _read_strokes(image_path, stroke_path, length: int, mode: str):
    with zipfile.ZipFile(image_path) as images:
        class_names, drawing_ids, _ = omniglot.sorted_layout(
            omniglot.index_archive(images, ".png"), str(image_path)
        )
    sequences = np.zeros(drawing_ids.shape + (length, 3), np.float32)
    mask = np.zeros(drawing_ids.shape, bool)
    problems = []
    with zipfile.ZipFile(stroke_path) as archive:
        index = omniglot.index_archive(archive, ".txt")
        for c, name in enumerate(class_names):
            files = index.pop(tuple(name.split("/")), {})
            for e, stem in enumerate(drawing_ids[c]):
                member = files.pop(stem, None)
                if member is None:
                    problems.append(f"{name}/{stem}.txt is missing")
                    continue
                try:
                    text = archive.read(member).decode("utf-8")
                    strokes = parse_strokes(text, source=f"{stroke_path}:{member}")
                    sequences[c, e] = strokes_to_sequence(strokes, length=length, mode=mode)
                    mask[c, e] = True
                except (ValueError, UnicodeDecodeError) as err:
                    problems.append(str(err))
            if files:
                index[tuple(name.split("/"))] = files
    extra = sum(len(files) for files in index.values())
    if extra:
        _LOG.warning(
            "%s: %d stroke files have no image in %s; ignored", stroke_path, extra, image_path
        )
    return class_names, drawing_ids, sequences, mask, problems


def load_omniglot_strokes(
    subset: str,
    data_dir: PathLike | None = None,
    *,
    length: int = 64,
    mode: str = "arclength",
    cache_dir: PathLike | None = None,
    download: bool = False,
) -> StrokeSequences:
    """Loads ``strokes_<subset>.zip`` as sequences aligned with `omniglot.load_omniglot_subset`.

    The class and drawing order is read from ``images_<subset>.zip`` (sorted by alphabet,
    character, file stem), so both archives are needed. Missing or unparseable stroke files
    give ``mask = False``; their count is logged as a warning on every load.

    Returns:
      `StrokeSequences` with sequences [classes, 20, length, 3].
    """
    omniglot.check_subset(subset)
    _check_length_mode(length, mode)
    image_path = archives.archive_path(f"images_{subset}", data_dir, download=download)
    stroke_path = archives.archive_path(f"strokes_{subset}", data_dir, download=download)
    cache = archives.cache_file(
        f"omniglot_strokes-{subset}",
        f"{archives.archive_md5(stroke_path)}-{archives.archive_md5(image_path)}",
        cache_dir,
        length=length,
        mode=mode,
        v=_CACHE_VERSION,
    )
    stored = archives.load_npz(
        cache, ("sequences", "mask", "drawing_ids", "class_names", "problems")
    )
    if stored is None:
        class_names, drawing_ids, sequences, mask, problems = _read_strokes(
            image_path, stroke_path, length, mode
        )
        archives.save_cache_npz(
            cache,
            sequences=sequences,
            mask=mask,
            drawing_ids=drawing_ids,
            class_names=np.array(class_names, dtype=str),
            problems=np.array(problems[:3], dtype=str),
        )
    else:
        class_names = tuple(str(n) for n in stored["class_names"])
        drawing_ids, sequences, mask = stored["drawing_ids"], stored["sequences"], stored["mask"]
        problems = [str(p) for p in stored["problems"]]
    _report_missing(str(stroke_path), mask, problems)
    return StrokeSequences(sequences, mask, class_names, drawing_ids)


def select_stroke_classes(data: StrokeSequences, indices) -> StrokeSequences:
    """Keeps the classes at ``indices`` ([n] ints), in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    return StrokeSequences(
        sequences=data.sequences[indices],
        mask=data.mask[indices],
        class_names=tuple(data.class_names[i] for i in indices),
        drawing_ids=data.drawing_ids[indices],
    )


def rotate_stroke_classes(data: StrokeSequences) -> StrokeSequences:
    """Stroke version of `omniglot.rotate_classes`: class ``4c + k`` is class c turned k times."""
    rotated = np.stack([rotate_sequences(data.sequences, k) for k in range(4)], axis=1)
    return StrokeSequences(
        sequences=rotated.reshape((-1,) + data.sequences.shape[1:]),
        mask=np.repeat(data.mask, 4, axis=0),
        class_names=omniglot.rotated_class_names(data.class_names),
        drawing_ids=np.repeat(data.drawing_ids, 4, axis=0),
    )


def omniglot_multimodal_class_splits(
    data_dir: PathLike | None = None,
    *,
    image_size: int = 28,
    length: int = 64,
    mode: str = "arclength",
    rotations: bool = True,
    num_val_alphabets: int = 1,
    cache_dir: PathLike | None = None,
    download: bool = False,
) -> dict[str, tuple[omniglot.ClassImages, StrokeSequences]]:
    """Like `omniglot.omniglot_splits`, with the aligned `StrokeSequences` of each split.

    Rotated train classes rotate their stroke offsets with the image (`rotate_sequences`).
    """
    loaded = {}
    for subset in ("background_small1", "background_small2"):
        images = omniglot.load_omniglot_subset(
            subset, data_dir, image_size=image_size, cache_dir=cache_dir, download=download
        )
        strokes = load_omniglot_strokes(
            subset, data_dir, length=length, mode=mode, cache_dir=cache_dir, download=download
        )
        if images.class_names != strokes.class_names or not np.array_equal(
            images.drawing_ids, strokes.drawing_ids
        ):
            raise ValueError(f"images and strokes of subset {subset!r} are not in the same order")
        loaded[subset] = (images, strokes)
    indices = omniglot.split_class_indices(
        loaded["background_small1"][0].class_names,
        loaded["background_small2"][0].class_names,
        num_val_alphabets=num_val_alphabets,
    )
    splits = {}
    sources = (
        ("train", "background_small1"),
        ("val", "background_small1"),
        ("test", "background_small2"),
    )
    for split, subset in sources:
        images, strokes = loaded[subset]
        images = omniglot.select_classes(images, indices[split])
        strokes = select_stroke_classes(strokes, indices[split])
        if rotations and split == "train":
            images, strokes = omniglot.rotate_classes(images), rotate_stroke_classes(strokes)
        splits[split] = (images, strokes)
    return splits


def omniglot_multimodal_splits(
    data_dir: PathLike | None = None,
    *,
    image_size: int = 28,
    length: int = 64,
    mode: str = "arclength",
    rotations: bool = True,
    num_val_alphabets: int = 1,
    cache_dir: PathLike | None = None,
    download: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Train / val / test pytrees ``{"image", "strokes", "mask"}``, as `omniglot.omniglot_splits`.

    Arguments are those of `omniglot_multimodal_class_splits`.

    Returns:
      For each split: image [C, E, H, W, 1] float32, strokes [C, E, length, 3] float32 and
      mask [C, E, 2] float32 (1 = present; column 0 image, column 1 strokes).
    """
    splits = omniglot_multimodal_class_splits(
        data_dir,
        image_size=image_size,
        length=length,
        mode=mode,
        rotations=rotations,
        num_val_alphabets=num_val_alphabets,
        cache_dir=cache_dir,
        download=download,
    )
    out = {}
    for split, (images, strokes) in splits.items():
        mask = np.stack([np.ones_like(strokes.mask), strokes.mask], axis=-1).astype(np.float32)
        out[split] = {"image": images.images, "strokes": strokes.sequences, "mask": mask}
    return out
