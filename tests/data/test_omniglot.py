"""Tests for mmjax.data.omniglot on the real archives (and small synthetic ones)."""

import io
import logging
import pathlib
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from mmjax.data import archives, omniglot

SMALL1 = "images_background_small1"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def small1(cache) -> omniglot.ClassImages:
    return omniglot.load_omniglot_subset("background_small1", cache_dir=cache)


@pytest.fixture(scope="module")
def small2(cache) -> omniglot.ClassImages:
    return omniglot.load_omniglot_subset("background_small2", cache_dir=cache)


@pytest.fixture(scope="module")
def splits(cache, small1, small2) -> dict:
    del small1, small2  # Only to fill the cache first.
    return omniglot.omniglot_splits(cache_dir=cache)


@pytest.fixture(scope="module")
def real_zip() -> zipfile.ZipFile:
    path = archives.archive_path(SMALL1)
    with zipfile.ZipFile(path) as archive:
        yield archive


def _synthetic_zip(path, real_zip, characters, *, drop=(), replace=None, junk=True):
    """Copies the drawings of ``characters`` ("Alphabet/characterNN") into a small zip."""
    replace = replace or {}
    with zipfile.ZipFile(path, "w") as out:
        for member in real_zip.namelist():
            parts = member.split("/")
            if len(parts) == 4 and "/".join(parts[1:3]) in characters and member.endswith(".png"):
                if member in drop:
                    continue
                out.writestr(member, replace.get(member, real_zip.read(member)))
        if junk:
            out.writestr("__MACOSX/images_background_small1/._x.png", b"junk")
            out.writestr("images_background_small1/Balinese/.DS_Store", b"junk")
            out.writestr("images_background_small1/readme.txt", b"not an image")
    return path


def test_real_subsets_shapes_and_values(small1, small2):
    for data, classes in ((small1, 136), (small2, 156)):
        assert data.images.shape == (classes, 20, 28, 28, 1)
        assert data.images.dtype == np.float32
        assert data.num_classes == classes and data.examples_per_class == 20
        assert data.images.min() >= 0.0 and data.images.max() <= 1.0
        assert 0.02 < data.images.mean() < 0.3  # Ink is a small fraction of the page...
        assert np.median(data.images) == 0.0  # ...and the background is 0.
        assert data.images.max() == 1.0
        assert data.drawing_ids.shape == (classes, 20)


def test_order_is_sorted_by_alphabet_character_and_stem(small1):
    keys = [tuple(n.split("/")) for n in small1.class_names]
    assert keys == sorted(keys) and len(set(keys)) == 136
    assert small1.class_names[0] == "Balinese/character01"
    assert sorted(set(small1.alphabets)) == [
        "Balinese",
        "Early_Aramaic",
        "Greek",
        "Korean",
        "Latin",
    ]
    for row in small1.drawing_ids:
        assert list(row) == sorted(row)
        assert [s.split("_")[1] for s in row] == [f"{i:02d}" for i in range(1, 21)]
    assert small1.drawing_ids[0, 0] == "0108_01"


def test_pixels_match_pil_resize_of_the_png(small1, real_zip):
    c = small1.class_names.index("Korean/character07")
    member = f"{SMALL1}/Korean/character07/{small1.drawing_ids[c, 3]}.png"
    with Image.open(io.BytesIO(real_zip.read(member))) as image:
        ink = (
            1.0 - np.asarray(image.convert("L").resize((28, 28), Image.Resampling.LANCZOS)) / 255.0
        )
    np.testing.assert_allclose(small1.images[c, 3, :, :, 0], ink, atol=1e-6)


def test_native_size_keeps_the_binary_png(tmp_path, real_zip):
    path = _synthetic_zip(
        tmp_path / "a.zip", real_zip, {"Greek/character03", "Balinese/character01"}
    )
    data = omniglot.read_image_archive(path, image_size=105)
    assert data.images.shape == (2, 20, 105, 105, 1)
    assert data.class_names == ("Balinese/character01", "Greek/character03")
    with Image.open(
        io.BytesIO(real_zip.read(f"{SMALL1}/Greek/character03/{data.drawing_ids[1, 0]}.png"))
    ) as image:
        original = np.asarray(image.convert("L")) / 255.0
    np.testing.assert_array_equal(data.images[1, 0, :, :, 0], 1.0 - original)
    assert set(np.unique(data.images)) == {0.0, 1.0}


def test_cache_is_reused(cache, small1, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache exists")

    monkeypatch.setattr(omniglot, "_decode_png", no_decoding)
    again = omniglot.load_omniglot_subset("background_small1", cache_dir=cache)
    np.testing.assert_array_equal(again.images, small1.images)
    assert again.class_names == small1.class_names
    np.testing.assert_array_equal(again.drawing_ids, small1.drawing_ids)
    md5 = archives.KNOWN_MD5[SMALL1 + ".zip"]
    assert any(md5 in p.name and "image_size=28" in p.name for p in cache.iterdir())


def _counting_decoder(monkeypatch):
    calls = []
    original = omniglot._decode_png

    def counting(*args):
        calls.append(args[1])
        return original(*args)

    monkeypatch.setattr(omniglot, "_decode_png", counting)
    return calls


def test_cache_rebuilt_when_parameters_change(cache, small1, monkeypatch):
    calls = _counting_decoder(monkeypatch)
    small = omniglot.load_omniglot_subset("background_small1", cache_dir=cache, image_size=14)
    assert len(calls) == 136 * 20
    assert small.images.shape == (136, 20, 14, 14, 1)
    assert any("image_size=14" in p.name for p in cache.iterdir())


def test_cache_rebuilt_when_archive_changes(tmp_path, monkeypatch):
    cache, folder = tmp_path / "cache", tmp_path / "omniglot"
    folder.mkdir()
    copy = folder / f"{SMALL1}.zip"
    shutil.copy(archives.archive_path(SMALL1), copy)
    calls = _counting_decoder(monkeypatch)
    omniglot.load_omniglot_subset("background_small1", folder, cache_dir=cache, image_size=8)
    omniglot.load_omniglot_subset("background_small1", folder, cache_dir=cache, image_size=8)
    assert len(calls) == 136 * 20  # The second load used the cache...
    monkeypatch.setattr(archives, "KNOWN_MD5", {})  # Accept the edited archive.
    with zipfile.ZipFile(copy, "a") as archive:
        archive.writestr("images_background_small1/notes.txt", b"edited")
    new_md5 = archives.archive_md5(copy)
    assert new_md5 != archives.KNOWN_MD5.get(copy.name, "e704a628b5459e08445c13499850abc4")
    omniglot.load_omniglot_subset("background_small1", folder, cache_dir=cache, image_size=8)
    assert len(calls) == 2 * 136 * 20  # ...but a changed source rebuilds it.
    assert len(list(cache.glob(f"*-{new_md5}-*.npz"))) == 1


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_damaged_cache_is_rebuilt_never_used(cache, small1, tmp_path, monkeypatch, damage):
    name = next(
        p.name for p in cache.iterdir() if "background_small1" in p.name and "=28" in p.name
    )
    private = tmp_path / "cache"
    private.mkdir()
    if damage == "truncate":  # e.g. a disk that filled up under an older, non-atomic writer
        data = (cache / name).read_bytes()
        (private / name).write_bytes(data[: len(data) // 2])
    else:  # a valid .npz under the right name that lacks the arrays
        np.savez(private / name, images=np.zeros((1, 1, 28, 28), np.uint8))
    calls = _counting_decoder(monkeypatch)
    again = omniglot.load_omniglot_subset("background_small1", cache_dir=private)
    assert len(calls) == 136 * 20  # decoded again from the archive...
    np.testing.assert_array_equal(again.images, small1.images)  # ...to the right data
    assert again.class_names == small1.class_names
    loaded = archives.load_npz(private / name, ("images", "class_names", "drawing_ids"))
    assert loaded["images"].shape == (136, 20, 28, 28)  # and the cache file is whole again


def test_corrupt_png_names_the_member(tmp_path, real_zip):
    bad = f"{SMALL1}/Greek/character03/0396_05.png"
    path = _synthetic_zip(
        tmp_path / "a.zip", real_zip, {"Greek/character03"}, replace={bad: b"\x89PNG broken"}
    )
    with pytest.raises(ValueError, match="0396_05.png"):
        omniglot.read_image_archive(path)


def test_unequal_drawing_counts_name_the_character(tmp_path, real_zip):
    drop = {f"{SMALL1}/Latin/character02/0684_07.png"}
    path = _synthetic_zip(
        tmp_path / "a.zip",
        real_zip,
        {"Latin/character01", "Latin/character02", "Greek/character01"},
        drop=drop,
    )
    with pytest.raises(ValueError, match="'Latin/character02'.* has 19 drawings, expected 20"):
        omniglot.read_image_archive(path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="subset='small3'"):
        omniglot.load_omniglot_subset("small3")
    with pytest.raises(ValueError, match="image_size=0"):
        omniglot.load_omniglot_subset("background_small1", image_size=0)
    with pytest.raises(ValueError, match=r"class_names has 1 names but images has 2 classes"):
        omniglot.ClassImages(np.zeros((2, 3, 4, 4, 1), np.float32), ("a",), np.zeros((2, 3), str))
    with pytest.raises(ValueError, match=r"\[classes, examples, height, width, 1 \| 3\]"):
        omniglot.ClassImages(np.zeros((2, 3, 4, 4), np.float32), ("a", "b"), np.zeros((2, 3), str))
    with pytest.raises(ValueError, match=r"drawing_ids must be a numpy array of shape \(2, 3\)"):
        omniglot.ClassImages(
            np.zeros((2, 3, 4, 4, 1), np.float32), ("a", "b"), np.zeros((2, 4), str)
        )


def test_splits_are_disjoint(splits, small1, small2):
    assert set(splits) == {"train", "val", "test"}
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert (train.num_classes, val.num_classes, test.num_classes) == (4 * 110, 26, 106)
    alphabets = [set(s.alphabets) for s in (train, val, test)]
    assert alphabets[1] == {"Latin"}
    assert alphabets[0] == {"Balinese", "Early_Aramaic", "Greek", "Korean"}
    assert alphabets[2] == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    characters = [{omniglot.base_class_name(n) for n in s.class_names} for s in (train, val, test)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not alphabets[i] & alphabets[j]
            assert not characters[i] & characters[j]
    # No drawing of the test split is pixel-identical to a training drawing.
    train_hashes = {img.tobytes() for img in small1.images.reshape(-1, 28, 28)}
    assert not any(img.tobytes() in train_hashes for img in test.images.reshape(-1, 28, 28))
    for split in (train, val, test):
        assert split.examples_per_class == 20


def test_overlapping_test_alphabets_are_dropped_with_warning(cache, small1, small2, caplog):
    del small1, small2
    with caplog.at_level(logging.WARNING):
        omniglot.omniglot_splits(cache_dir=cache, rotations=False)
    assert "['Greek', 'Latin']" in caplog.text and "156 -> 106" in caplog.text


def test_rotations(splits, small1):
    train = splits["train"]
    for c in (0, 57, 109):
        name = train.class_names[4 * c]
        assert "/rot" not in name
        assert train.class_names[4 * c + 1 : 4 * c + 4] == (
            f"{name}/rot90",
            f"{name}/rot180",
            f"{name}/rot270",
        )
        original = small1.images[small1.class_names.index(name)]
        for k in range(4):
            np.testing.assert_array_equal(
                train.images[4 * c + k], np.rot90(original, k, axes=(1, 2))
            )
            np.testing.assert_array_equal(
                train.drawing_ids[4 * c + k], small1.drawing_ids[small1.class_names.index(name)]
            )
    assert len(set(train.class_names)) == train.num_classes


def test_split_options(cache, small1, small2):
    del small1, small2
    plain = omniglot.omniglot_splits(cache_dir=cache, rotations=False, num_val_alphabets=2)
    assert set(plain["val"].alphabets) == {"Korean", "Latin"}
    assert plain["train"].num_classes == 24 + 22 + 24
    assert not any("/rot" in n for n in plain["train"].class_names)
    with pytest.raises(ValueError, match=r"num_val_alphabets=5 must be an int in \[1, 4\]"):
        omniglot.omniglot_splits(cache_dir=cache, num_val_alphabets=5)


def test_rotate_classes_requires_square_images():
    data = omniglot.ClassImages(
        np.zeros((1, 2, 3, 4, 1), np.float32), ("a/b",), np.zeros((1, 2), str)
    )
    with pytest.raises(ValueError, match="square"):
        omniglot.rotate_classes(data)
