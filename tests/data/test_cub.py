"""CUB-200-2011: Chen et al.'s split rule; official archive layout and TFDS (mocked)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from mmjax.data import image_splits
from mmjax.data.cub import cub_split_of, cub_splits

# Class ids 1..8 -> Chen et al.: idx 0,2,4,6 train; 1,5 val; 3,7 test. Sizes vary per class.
SIZES = {1: 3, 2: 2, 3: 4, 4: 3, 5: 3, 6: 2, 7: 3, 8: 2}


def test_split_rule_matches_the_published_lists():
    splits = [cub_split_of(i) for i in range(200)]
    assert [splits.count(s) for s in ("train", "val", "test")] == [100, 50, 50]
    # torchmeta's assets/cub/test.json: ids 004, 008, ..., 200.
    assert [i + 1 for i in range(200) if splits[i] == "test"] == list(range(4, 201, 4))
    assert [i + 1 for i in range(200) if splits[i] == "val"] == list(range(2, 201, 4))
    with pytest.raises(ValueError, match="class_index=200"):
        cub_split_of(200)


def _write_archive(root):
    (root / "images").mkdir(parents=True)
    classes, images, labels = [], [], []
    image_id = 0
    for class_id, n in SIZES.items():
        folder = f"{class_id:03d}.Bird_{class_id}"
        classes.append(f"{class_id} {folder}")
        (root / "images" / folder).mkdir()
        for e in range(n):
            image_id += 1
            name = f"{folder}/Bird_{class_id}_{e:04d}.jpg"
            Image.new("RGB", (13, 9), (30 * class_id, 10 * e, 100)).save(root / "images" / name)
            images.append(f"{image_id} {name}")
            labels.append(f"{image_id} {class_id}")
    for name, rows in (("classes", classes), ("images", images), ("image_class_labels", labels)):
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")


def test_archive_layout_split_sizes_pixels_and_cache(tmp_path, monkeypatch):
    _write_archive(tmp_path / "CUB_200_2011")
    cache = tmp_path / "cache"
    splits = cub_splits(tmp_path, source="archive", image_size=6, cache_dir=cache)
    expected = {"train": [1, 3, 5, 7], "val": [2, 6], "test": [4, 8]}
    for split, ids in expected.items():
        data = splits[split]
        assert data.images.shape == (len(ids), min(SIZES[i] for i in ids), 6, 6, 3)
        assert data.class_names == tuple(f"{i:03d}.Bird_{i}" for i in ids)
        assert data.images.dtype == np.float32
        assert 0 <= data.images.min() and data.images.max() <= 1
    np.testing.assert_allclose(
        splits["test"].images[1, 1].mean(axis=(0, 1)), np.array([240, 10, 100]) / 255, atol=3 / 255
    )
    monkeypatch.setattr(image_splits, "to_rgb", lambda *a, **k: 1 / 0)
    cub_splits(tmp_path / "CUB_200_2011", image_size=6, cache_dir=cache)  # auto -> archive, cached
    monkeypatch.undo()
    Image.new("RGB", (13, 9), (0, 0, 0)).save(
        tmp_path / "CUB_200_2011/images/004.Bird_4/Bird_4_0000.jpg"
    )
    changed = cub_splits(tmp_path, image_size=6, cache_dir=cache)
    assert changed["test"].images[0, 0].max() < 0.02
    with pytest.raises(FileNotFoundError, match="image_class_labels.txt"):
        cub_splits(tmp_path / "none", source="archive")


def test_tfds_source_on_mock_data(tmp_path):
    examples = {
        split: [
            {"image": np.full((7, 11, 3), 25 * label + e, np.uint8), "label": label,
             "label_name": f"bird_{label}", "image/filename": "x.jpg"}
            for label in range(8) for e in range(2 if split == "train" else 1)
        ]
        for split in ("train", "test")
    }  # fmt: skip

    def as_data_source(self, split, *args, **kwargs):
        return examples[split]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        splits = cub_splits(source="tfds", image_size=5, cache_dir=tmp_path)
    assert splits["train"].images.shape == (4, 3, 5, 5, 3)  # train + test images of a class
    assert splits["val"].class_names == ("002.bird_1", "006.bird_5")
    assert splits["test"].class_names == ("004.bird_3", "008.bird_7")
    np.testing.assert_allclose(splits["test"].images[1, 2], (25 * 7) / 255, atol=1e-6)
    assert list(splits["test"].drawing_ids[1]) == ["train/14", "train/15", "test/7"]
    assert not list(tmp_path.glob("*.npz"))  # mock data has no files to key a cache on
