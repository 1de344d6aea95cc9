"""tiered-ImageNet loader on tiny pickles in Ren et al.'s format (PNG bytes + label dicts)."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from mmjax.data import image_splits
from mmjax.data.tieredimagenet import read_labels, tieredimagenet_splits

# split -> class sizes (unequal, as in tiered-ImageNet)
SIZES = {"train": [3, 5, 4], "val": [3, 3], "test": [4, 3]}


def _png(array: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)  # 1-D, as in the release


def _write(root, with_names=True):
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    truth = {}
    for split, sizes in SIZES.items():
        labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
        order = rng.permutation(len(labels))
        labels = labels[order]
        images = rng.integers(0, 256, (len(labels), 9, 9, 3), dtype=np.uint8)
        with open(root / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump([_png(im) for im in images], f)
        record = {"label_specific": labels, "label_general": labels // 2}
        if with_names:
            record["label_specific_str"] = [f"{split}_wnid{c}" for c in range(len(sizes))]
        with open(root / f"{split}_labels.pkl", "wb") as f:
            pickle.dump(record, f)
        truth[split] = (labels, images)
    return truth


def test_splits_truncate_to_smallest_class_exact_pixels_and_cache(tmp_path, monkeypatch):
    truth = _write(tmp_path / "tieredimagenet")
    cache = tmp_path / "cache"
    splits = tieredimagenet_splits(tmp_path, image_size=9, cache_dir=cache)
    for split, sizes in SIZES.items():
        data = splits[split]
        assert data.images.shape == (len(sizes), min(sizes), 9, 9, 3)
        assert data.images.dtype == np.float32
        assert data.class_names == tuple(f"{split}_wnid{c}" for c in range(len(sizes)))
        labels, images = truth[split]
        for c in range(len(sizes)):
            first = np.flatnonzero(labels == c)[: min(sizes)]  # first images in file order
            np.testing.assert_array_equal(data.images[c], images[first] / np.float32(255))
            assert list(data.drawing_ids[c]) == [str(i) for i in first]
    names = [n for d in splits.values() for n in d.class_names]
    assert len(names) == len(set(names))

    monkeypatch.setattr(image_splits, "to_rgb", lambda *a, **k: 1 / 0)
    cached = tieredimagenet_splits(tmp_path, image_size=9, cache_dir=cache)  # no decode
    np.testing.assert_array_equal(cached["test"].images, splits["test"].images)
    monkeypatch.undo()

    with open(tmp_path / "tieredimagenet" / "val_labels.pkl", "wb") as f:  # changed source
        pickle.dump({"label_specific": np.zeros(6, np.int64)}, f)
    changed = tieredimagenet_splits(tmp_path, image_size=4, cache_dir=cache)
    assert changed["val"].images.shape == (1, 6, 4, 4, 3)
    assert changed["val"].class_names == ("val/0",)  # no label_specific_str
    assert len(list(cache.glob("tieredimagenet-*.npz"))) == 2


def test_examples_per_class_and_errors(tmp_path):
    _write(tmp_path / "tieredimagenet", with_names=False)
    cache = tmp_path / "cache"
    splits = tieredimagenet_splits(tmp_path, image_size=5, examples_per_class=2, cache_dir=cache)
    assert [d.images.shape[:2] for d in splits.values()] == [(3, 2), (2, 2), (2, 2)]
    with pytest.raises(ValueError, match="train: examples_per_class=4 but 1 classes have fewer"):
        tieredimagenet_splits(tmp_path, examples_per_class=4, cache_dir=cache)
    with pytest.raises(ValueError, match="examples_per_class=0"):
        tieredimagenet_splits(tmp_path, examples_per_class=0)
    with pytest.raises(FileNotFoundError, match=r"train,val,test\}_images_png\.pkl"):
        tieredimagenet_splits(tmp_path / "nothing")
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump({"labels": [0]}, f)
    with pytest.raises(ValueError, match="expected a dict with 'label_specific'"):
        read_labels(tmp_path / "bad.pkl")
