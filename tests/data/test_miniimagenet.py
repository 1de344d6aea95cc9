"""mini-ImageNet loaders on tiny data sets written in the two real on-disk forms."""

import csv
import pickle

import numpy as np
import pytest
from PIL import Image

from mmjax.data import image_splits, miniimagenet
from mmjax.data.miniimagenet import miniimagenet_splits

SPLIT_CLASSES = {"train": ["n001", "n002", "n003"], "val": ["n004", "n005"], "test": ["n006"]}
PER_CLASS = 4


def _color(c: int, e: int) -> tuple[int, int, int]:
    return (20 * c + 5, 10 * e + 30, 200 - 20 * c)


def _write_csv_form(root):
    (root / "images").mkdir(parents=True)
    c = 0
    for split, wnids in SPLIT_CLASSES.items():
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for wnid in wnids:
                for e in range(PER_CLASS):
                    name = f"{wnid}{e:08d}.jpg"
                    Image.new("RGB", (10, 12), _color(c, e)).save(root / "images" / name)
                    writer.writerow([name, wnid])
                c += 1


def _write_pickles(root, overlap=False):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, wnids in SPLIT_CLASSES.items():
        if overlap and split == "val":
            wnids = ["n001"] + wnids[1:]
        n = len(wnids) * PER_CLASS
        images = rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
        order = rng.permutation(n)  # class members scattered over image_data
        class_dict = {
            w: order[i * PER_CLASS : (i + 1) * PER_CLASS].tolist() for i, w in enumerate(wnids)
        }
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f)
        arrays[split] = (images, class_dict)
    return arrays


def _check_splits(splits, size):
    assert set(splits) == {"train", "val", "test"}
    for split, wnids in SPLIT_CLASSES.items():
        data = splits[split]
        assert data.images.shape == (len(wnids), PER_CLASS, size, size, 3)
        assert data.images.dtype == np.float32
        assert 0.0 <= data.images.min() and data.images.max() <= 1.0
        assert data.class_names == tuple(wnids)
    names = [n for d in splits.values() for n in d.class_names]
    assert len(names) == len(set(names))  # no class crosses splits


def test_csv_form_shapes_pixels_and_cache(tmp_path, monkeypatch):
    root = tmp_path / "miniimagenet"
    _write_csv_form(root)
    cache = tmp_path / "cache"
    splits = miniimagenet_splits(tmp_path, source="csv", image_size=8, cache_dir=cache)
    _check_splits(splits, 8)
    # Solid-colour JPEGs: each image is its colour (JPEG rounding aside), per class/example.
    np.testing.assert_allclose(
        splits["val"].images[1, 2].mean(axis=(0, 1)), np.array(_color(4, 2)) / 255, atol=3 / 255
    )
    assert splits["val"].drawing_ids[1, 2] == "n00500000002"
    assert len(list(cache.glob("miniimagenet-csv-*.npz"))) == 1

    # Second load: from the cache, no image decoded.
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(image_splits, "to_rgb", no_decode)
    again = miniimagenet_splits(root, source="csv", image_size=8, cache_dir=cache)
    np.testing.assert_array_equal(again["train"].images, splits["train"].images)
    monkeypatch.undo()

    # A changed image invalidates the cache: a new file, the new pixels.
    Image.new("RGB", (10, 12), (255, 255, 255)).save(root / "images" / "n00100000000.jpg")
    changed = miniimagenet_splits(root, source="csv", image_size=8, cache_dir=cache)
    assert changed["train"].images[0, 0].min() > 0.98
    assert len(list(cache.glob("miniimagenet-csv-*.npz"))) == 2


def test_pickle_form_exact_pixels_resize_and_auto(tmp_path):
    arrays = _write_pickles(tmp_path / "miniimagenet")
    cache = tmp_path / "cache"
    splits = miniimagenet_splits(tmp_path, image_size=12, cache_dir=cache)  # auto -> pickles
    _check_splits(splits, 12)
    images, class_dict = arrays["train"]
    for c, wnid in enumerate(SPLIT_CLASSES["train"]):
        np.testing.assert_array_equal(
            splits["train"].images[c], images[class_dict[wnid]].astype(np.float32) / 255
        )
        assert list(splits["train"].drawing_ids[c]) == [str(i) for i in class_dict[wnid]]
    small = miniimagenet_splits(tmp_path, source="pickle", image_size=6, cache_dir=cache)
    _check_splits(small, 6)
    assert len(list(cache.glob("miniimagenet-pickle-*.npz"))) == 2  # size is in the key


def test_class_in_two_splits_is_an_error(tmp_path):
    _write_pickles(tmp_path / "miniimagenet", overlap=True)
    with pytest.raises(ValueError, match="class 'n001' is in both 'train' and 'val'"):
        miniimagenet_splits(tmp_path, image_size=12, cache_dir=tmp_path / "cache")


def test_missing_and_malformed(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.csv.*mini-imagenet-cache"):
        miniimagenet_splits(tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="source='png'"):
        miniimagenet_splits(tmp_path, source="png")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.jpg,n1\n")
    with pytest.raises(ValueError, match="expected the header 'filename,label'"):
        miniimagenet.read_split_csv(bad)
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump({"images": np.zeros((1, 2, 2, 3), np.uint8)}, f)
    with pytest.raises(ValueError, match="expected keys 'image_data' and 'class_dict'"):
        miniimagenet.read_cache_pickle(tmp_path / "bad.pkl")
