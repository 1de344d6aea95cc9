"""Class-grouped images from any TFDS image classification data set (no TensorFlow needed).

Uses ``tfds.data_source`` (random access over ArrayRecord files), which works without
TensorFlow; the data set must have been prepared in ArrayRecord format (e.g. with
``tfds build --file_format=array_record``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os

import numpy as np
from PIL import Image

from mmjax.data.omniglot import ClassImages

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsClassImages(ClassImages):
    """`ClassImages` that also records the classes dropped for having too few examples.

    Attributes:
      drawing_ids: [classes, examples] str, the example's index in the split.
      dropped_classes: names of the classes with fewer than ``examples_per_class`` examples.
      dropped_class_sizes: their numbers of examples, same order.
    """

    dropped_classes: tuple[str, ...] = ()
    dropped_class_sizes: tuple[int, ...] = ()


def _to_gray(image: np.ndarray, index: int, image_size: int) -> np.ndarray:
    """[H, W] or [H, W, 1 | 3 | 4] uint8 -> [image_size, image_size] float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        pil = Image.fromarray(image.astype(np.uint8)).convert("L")
    elif image.ndim == 2:
        pil = Image.fromarray(image.astype(np.uint8), mode="L")
    else:
        raise ValueError(
            f"example {index}: image of shape {image.shape} is not [H, W, 1|3|4] or [H, W]"
        )
    if pil.size != (image_size, image_size):
        pil = pil.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(pil, dtype=np.float32) / 255.0


def _label_names(source, label_key: str):
    """``int -> str`` from the data set's ClassLabel feature, or ``str`` when there is none."""
    try:
        feature = source.dataset_info.features[label_key]
        return feature.int2str
    except (AttributeError, KeyError, TypeError):
        return str


def load_tfds_classes(
    name: str,
    *,
    split: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int = 28,
    examples_per_class: int,
    image_key: str = "image",
    label_key: str = "label",
    invert: bool = False,
) -> TfdsClassImages:
    """Groups a TFDS split by label into ``[classes, examples_per_class, H, W, 1]`` images.

    Each class keeps its first ``examples_per_class`` examples in split order; classes with
    fewer are dropped, logged with ``logging.warning`` and recorded in
    ``dropped_classes`` / ``dropped_class_sizes``. Classes are sorted by label id.

    Args:
      name: TFDS name, e.g. ``"omniglot"`` or ``"mnist"``.
      split: TFDS split, e.g. ``"train"``.
      data_dir: TFDS data folder (None = TFDS default).
      image_size: output height and width (grayscale, Lanczos resize).
      examples_per_class: examples kept per class.
      image_key, label_key: feature names of the image and the class label.
      invert: map v -> 1 - v, e.g. True for TFDS omniglot (black ink on white) so ink = 1.

    Returns:
      `TfdsClassImages` with images float32 in [0, 1].

    Raises:
      ValueError: bad arguments, a missing feature, or no class with enough examples.
    """
    import tensorflow_datasets as tfds  # Imported lazily: slow, and only needed here.

    for arg, value in (("image_size", image_size), ("examples_per_class", examples_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}={value!r} must be a positive int")
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    label_name = _label_names(source, label_key)
    by_label: dict[int, list[int]] = collections.defaultdict(list)
    images: dict[int, list[np.ndarray]] = collections.defaultdict(list)
    for index in range(len(source)):
        example = source[index]
        for key in (image_key, label_key):
            if key not in example:
                raise ValueError(
                    f"{key!r} is not a feature of {name}[{split}]; features are {sorted(example)}"
                    " (set image_key= / label_key=)"
                )
        label = int(example[label_key])
        by_label[label].append(index)
        if len(images[label]) < examples_per_class:
            images[label].append(_to_gray(example[image_key], index, image_size))
    kept = sorted(lab for lab in by_label if len(by_label[lab]) >= examples_per_class)
    dropped = sorted(lab for lab in by_label if len(by_label[lab]) < examples_per_class)
    if dropped:
        _LOG.warning(
            "%s[%s]: dropped %d of %d classes with fewer than examples_per_class=%d examples",
            name,
            split,
            len(dropped),
            len(by_label),
            examples_per_class,
        )
    if not kept:
        raise ValueError(
            f"no class of {name}[{split}] has examples_per_class={examples_per_class} examples "
            f"(largest class: {max((len(v) for v in by_label.values()), default=0)})"
        )
    array = np.stack([np.stack(images[lab]) for lab in kept])[..., None]
    return TfdsClassImages(
        images=1.0 - array if invert else array,
        class_names=tuple(label_name(lab) for lab in kept),
        drawing_ids=np.array(
            [[str(i) for i in by_label[lab][:examples_per_class]] for lab in kept]
        ),
        dropped_classes=tuple(label_name(lab) for lab in dropped),
        dropped_class_sizes=tuple(len(by_label[lab]) for lab in dropped),
    )
