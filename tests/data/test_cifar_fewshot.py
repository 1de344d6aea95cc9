"""CIFAR-FS and FC100 from TFDS cifar100 (mocked): published class lists, labels, pixels."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmjax.data import cifar_fewshot as cf


def _examples(split):
    """2 train / 1 test image per CIFAR-100 class, consistent fine and coarse labels."""
    per_class = 2 if split == "train" else 1
    return [
        {
            "image": np.full((32, 32, 3), 2 * fine + e, np.uint8),
            "label": fine,
            "coarse_label": cf.CIFAR100_COARSE_NAMES.index(cf.SUPERCLASS_OF[name]),
            "id": f"{split}_{fine}_{e}",
        }
        for fine, name in enumerate(cf.CIFAR100_FINE_NAMES)
        for e in range(per_class)
    ]


def _mock():
    return tfds.testing.mock_data(as_data_source_fn=lambda self, split, *a, **k: _examples(split))


def test_published_lists():
    for classes, sizes in ((cf.CIFAR_FS_CLASSES, (64, 16, 20)), (cf.FC100_CLASSES, (60, 20, 20))):
        assert tuple(len(classes[s]) for s in ("train", "val", "test")) == sizes
        assert sorted(c for s in classes.values() for c in s) == list(cf.CIFAR100_FINE_NAMES)
    assert [len(cf.FC100_SUPERCLASSES[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert cf.FC100_SUPERCLASSES["test"] == (
        "aquatic_mammals",
        "insects",
        "medium_mammals",
        "people",
    )
    assert {"baby", "whale", "worm"} <= set(cf.CIFAR_FS_CLASSES["test"])
    assert {"otter", "tractor", "sea"} <= set(cf.CIFAR_FS_CLASSES["val"])
    assert len(cf.CIFAR100_FINE_NAMES) == 100 and cf.CIFAR100_FINE_NAMES[:2] == (
        "apple",
        "aquarium_fish",
    )


@pytest.mark.parametrize(
    "load, classes",
    [(cf.cifar_fs_splits, cf.CIFAR_FS_CLASSES), (cf.fc100_splits, cf.FC100_CLASSES)],
)
def test_splits_on_mock_cifar100(tmp_path, load, classes):
    with _mock():
        splits = load(cache_dir=tmp_path)
    for split in ("train", "val", "test"):
        data = splits[split]
        assert data.class_names == classes[split]
        assert data.images.shape == (len(classes[split]), 3, 32, 32, 3)  # train + test images
        assert data.images.dtype == np.float32
        # Pixel value 2 * fine label + example: each class holds its own images, in order.
        fine = np.array([cf.CIFAR100_FINE_NAMES.index(n) for n in data.class_names])
        expected = (2 * fine[:, None] + np.array([0, 1, 0])) / np.float32(255)
        np.testing.assert_allclose(data.images[..., 0, 0, 0], expected, atol=1e-6)
        assert list(data.drawing_ids[0]) == [
            f"train/{2 * fine[0]}",
            f"train/{2 * fine[0] + 1}",
            f"test/{fine[0]}",
        ]
    if load is cf.fc100_splits:  # no superclass crosses splits
        supers = {s: {cf.SUPERCLASS_OF[n] for n in splits[s].class_names} for s in splits}
        assert not (supers["train"] & supers["val"]) and not (supers["train"] & supers["test"])


def test_default_mock_examples_carry_labels_and_fc100_checks_coarse(tmp_path):
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        example = tfds.data_source("cifar100", split="train")[0]
        assert {"image", "label", "coarse_label"} <= set(example)
        assert example["image"].shape == (32, 32, 3)
        # Random mock labels: fine and coarse disagree with CIFAR-100's hierarchy.
        with pytest.raises(ValueError, match="coarse_label"):
            cf.fc100_splits(cache_dir=tmp_path)
        with pytest.raises(ValueError, match="cifar_fs train: no image of the classes"):
            cf.cifar_fs_splits(cache_dir=tmp_path)
