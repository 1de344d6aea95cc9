"""Tests for mmjax.data.tfds on TFDS mock data (no download, no TensorFlow)."""

import collections
import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmjax.data.omniglot import ClassImages
from mmjax.data.tfds import TfdsClassImages, load_tfds_classes

NUM_EXAMPLES = 40


def _mock():
    return tfds.testing.mock_data(
        num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
    )


def _oracle(name, label_key="label"):
    """[(label, image)] of the mocked split, in order."""
    source = tfds.data_source(name, split="train")
    return [(int(source[i][label_key]), np.asarray(source[i]["image"])) for i in range(len(source))]


def test_mnist_grouped_by_label_with_dropped_classes(caplog):
    with _mock():
        examples = _oracle("mnist")
        with caplog.at_level(logging.WARNING):
            data = load_tfds_classes("mnist", split="train", examples_per_class=4)
    counts = collections.Counter(label for label, _ in examples)
    kept = sorted(lab for lab, n in counts.items() if n >= 4)
    dropped = sorted(lab for lab, n in counts.items() if n < 4)
    assert kept and dropped  # The mock data exercises both branches.
    assert isinstance(data, TfdsClassImages) and isinstance(data, ClassImages)
    assert data.images.shape == (len(kept), 4, 28, 28, 1)
    assert data.images.dtype == np.float32
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert data.class_names == tuple(str(lab) for lab in kept)
    assert data.dropped_classes == tuple(str(lab) for lab in dropped)
    assert data.dropped_class_sizes == tuple(counts[lab] for lab in dropped)
    assert f"dropped {len(dropped)} of {len(counts)} classes" in caplog.text
    # Each class keeps its first 4 examples in split order, pixel for pixel.
    for c, label in enumerate(kept):
        indices = [i for i, (lab, _) in enumerate(examples) if lab == label][:4]
        assert list(data.drawing_ids[c]) == [str(i) for i in indices]
        for e, i in enumerate(indices):
            np.testing.assert_allclose(
                data.images[c, e, :, :, 0], examples[i][1][:, :, 0] / 255.0, atol=1e-6
            )


def test_omniglot_rgb_is_resized_grayscale_and_inverted():
    with _mock():
        examples = _oracle("omniglot")
        plain = load_tfds_classes("omniglot", split="train", examples_per_class=1, image_size=20)
        inverted = load_tfds_classes(
            "omniglot", split="train", examples_per_class=1, image_size=20, invert=True
        )
    assert plain.images.shape == (len({lab for lab, _ in examples}), 1, 20, 20, 1)
    np.testing.assert_allclose(inverted.images, 1.0 - plain.images, atol=1e-6)
    assert plain.dropped_classes == ()
    # The mock images are noise around mid-gray; grayscale keeps that.
    assert 0.3 < plain.images.mean() < 0.7
    first = [i for i, (lab, _) in enumerate(examples) if str(lab) == plain.class_names[0]][0]
    assert plain.drawing_ids[0, 0] == str(first)


def test_no_class_left_raises():
    with _mock():
        with pytest.raises(
            ValueError, match=r"no class of mnist\[train\] has examples_per_class=1000"
        ):
            load_tfds_classes("mnist", split="train", examples_per_class=1000)


def test_bad_arguments():
    with _mock():
        with pytest.raises(ValueError, match="'picture' is not a feature of mnist"):
            load_tfds_classes("mnist", split="train", examples_per_class=1, image_key="picture")
        with pytest.raises(ValueError, match="examples_per_class=0 must be a positive int"):
            load_tfds_classes("mnist", split="train", examples_per_class=0)
