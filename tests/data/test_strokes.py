"""Tests for mmjax.data.strokes: parsing, resampling, rotation and multimodal splits."""

import io
import logging
import pathlib
import zipfile

import numpy as np
import pytest
from PIL import Image

from mmjax.data import archives, omniglot, strokes

SUBSET = "background_small1"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def zips():
    with (
        zipfile.ZipFile(archives.archive_path(f"images_{SUBSET}")) as images,
        zipfile.ZipFile(archives.archive_path(f"strokes_{SUBSET}")) as stroke_files,
    ):
        yield images, stroke_files


@pytest.fixture(scope="module")
def drawings(zips):
    """[(ink [105, 105] bool, strokes, text)] for 40 real drawings spread over the subset."""
    images, stroke_files = zips
    members = sorted(m for m in images.namelist() if m.endswith(".png"))[::68]
    out = []
    for member in members:
        with Image.open(io.BytesIO(images.read(member))) as image:
            ink = np.asarray(image.convert("L")) < 128
        text = stroke_files.read(member.replace("images_", "strokes_")[:-4] + ".txt").decode()
        out.append((ink, strokes.parse_strokes(text, source=member), text))
    return out


def _near_ink(ink: np.ndarray, points: np.ndarray, radius: int = 2) -> np.ndarray:
    """[n] bool: (row, col) points within ``radius`` px (Chebyshev) of an ink pixel."""
    padded = np.pad(ink, radius)
    grown = np.zeros_like(ink)
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            grown |= padded[
                radius + dr : radius + dr + ink.shape[0], radius + dc : radius + dc + ink.shape[1]
            ]
    rows, cols = np.round(points).astype(int).T
    inside = (rows >= 0) & (rows < ink.shape[0]) & (cols >= 0) & (cols < ink.shape[1])
    return inside & grown[np.clip(rows, 0, ink.shape[0] - 1), np.clip(cols, 0, ink.shape[1] - 1)]


def test_parse_real_files(drawings):
    assert len(drawings) == 40
    for _, parsed, text in drawings:
        lines = text.splitlines()
        assert len(parsed) == lines.count("BREAK") >= 1
        assert sum(len(s) for s in parsed) == len(lines) - 1 - lines.count("BREAK")
        first = lines[1].split(",")
        np.testing.assert_allclose(parsed[0][0], [float(v) for v in first])
        for stroke in parsed:
            assert stroke.ndim == 2 and stroke.shape[1] == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3\nBREAK\n", r"<string>: a stroke file must begin with a line 'START'"),
        ("", "got an empty file"),
        ("START\n1,2,0\n3,4,5\n", "no 'BREAK' line"),
        ("START\n1,2,0\nBREAK\nBREAK\n", r"line 4: empty stroke"),
        ("START\nBREAK\n", r"line 2: empty stroke"),
        ("START\n1,2,0\n1,2\nBREAK\n", r"line 3: malformed line '1,2'"),
        ("START\n1,2,0\na,b,c\nBREAK\n", r"line 3: malformed line 'a,b,c'"),
        ("START\n1,2,0\n1,nan,4\nBREAK\n", r"line 3: malformed"),
        ("START\n1,2,0\nBREAK\n5,5,9\n", r"last stroke \(1 points\) is not closed"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        strokes.parse_strokes(text)


def test_parse_error_names_source_and_tolerates_crlf():
    with pytest.raises(ValueError, match="Greek/x.txt, line 3"):
        strokes.parse_strokes("START\n1,2,0\noops\nBREAK\n", source="Greek/x.txt")
    parsed = strokes.parse_strokes("START\r\n1,2,0\r\n3,4,5\r\nBREAK\r\n6,7,8\r\nBREAK\r\n")
    assert [s.shape for s in parsed] == [(2, 3), (1, 3)]


def test_sequences_have_fixed_length_and_documented_encoding(drawings):
    for _, parsed, _ in drawings:
        for length in (32, 64):
            for mode in strokes.MODES:
                sequence = strokes.strokes_to_sequence(parsed, length=length, mode=mode)
                assert sequence.shape == (length, 3) and sequence.dtype == np.float32
                assert sequence[0, 2] == 1.0 and (sequence[0, :2] == 0).all()
                assert sequence[:, 2].sum() == len(parsed)  # One pen-lift flag per stroke.
                assert set(np.unique(sequence[:, 2])) <= {0.0, 1.0}
                path = np.cumsum(sequence[:, :2], axis=0)
                assert (path.max(0) - path.min(0)).max() <= 1.0 + 1e-5  # Unit bounding box.
                assert np.isfinite(sequence).all()


def test_arclength_resampling_is_uniform_on_a_stroke():
    line = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 100.0], [10.0, 0.0, 110.0]])
    xy, starts = strokes.resample_strokes([line], length=11, mode="arclength")
    np.testing.assert_allclose(xy[:, 0], np.arange(11.0), atol=1e-9)
    assert starts.tolist() == [True] + [False] * 10
    xy, _ = strokes.resample_strokes([line], length=12, mode="time")  # Uniform in time instead.
    np.testing.assert_allclose(
        xy[:, 0], np.interp(np.linspace(0, 110, 12), [0, 100, 110], [0, 1, 10])
    )


def test_time_mode_tolerates_time_going_backwards():
    # A few real files (e.g. Balinese/character20/0127_06) have times that decrease.
    stroke = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 50.0], [2.0, 0.0, 40.0], [3.0, 0.0, 60.0]])
    xy, _ = strokes.resample_strokes([stroke], length=7, mode="time")
    assert np.isfinite(xy).all() and (np.diff(xy[:, 0]) >= 0).all()
    assert xy[-1, 0] == 3.0


def test_points_are_shared_by_stroke_length():
    long = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 1.0]])
    short = np.array([[0.0, 5.0, 2.0], [10.0, 5.0, 3.0]])
    dot = np.array([[3.0, 3.0, 4.0]])
    _, starts = strokes.resample_strokes([long, short, dot], length=10)
    assert np.flatnonzero(starts).tolist() == [0, 6, 9]  # 7 spare points: 5.25 -> 5, 1.75 -> 2.
    with pytest.raises(ValueError, match="the drawing has 3 strokes, more than length=2"):
        strokes.resample_strokes([long, short, dot], length=2)
    with pytest.raises(ValueError, match="mode='speed'"):
        strokes.strokes_to_sequence([long], mode="speed")
    with pytest.raises(ValueError, match=r"strokes\[0\] has shape \(2,\)"):
        strokes.strokes_to_sequence([np.zeros(2)])


def test_points_land_on_ink(drawings):
    fractions = []
    for ink, parsed, _ in drawings:
        points = strokes.strokes_to_points(parsed, length=64)
        assert points.shape == (64, 2)
        fractions.append(_near_ink(ink, points).mean())
    assert np.mean(fractions) >= 0.97 and np.min(fractions) >= 0.9
    # A control: points of another drawing mostly miss this one's ink.
    ink, _, _ = drawings[0]
    assert _near_ink(ink, strokes.strokes_to_points(drawings[20][1])).mean() < 0.7


def test_rotated_strokes_land_on_rotated_ink(drawings):
    for ink, parsed, _ in drawings[::4]:
        for k in (1, 2, 3):
            points = strokes.strokes_to_points(strokes.rotate_strokes(parsed, k))
            assert _near_ink(np.rot90(ink, k), points).mean() >= 0.9
            np.testing.assert_allclose(
                strokes.strokes_to_sequence(strokes.rotate_strokes(parsed, k)),
                strokes.rotate_sequences(strokes.strokes_to_sequence(parsed), k),
                atol=1e-5,
            )


def test_load_strokes_aligned_with_images_and_cached(cache, monkeypatch):
    images = omniglot.load_omniglot_subset(SUBSET, cache_dir=cache)
    loaded = strokes.load_omniglot_strokes(SUBSET, cache_dir=cache)
    assert loaded.sequences.shape == (136, 20, 64, 3) and loaded.sequences.dtype == np.float32
    assert loaded.mask.shape == (136, 20) and loaded.mask.all()
    assert loaded.class_names == images.class_names
    np.testing.assert_array_equal(loaded.drawing_ids, images.drawing_ids)

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed although the cache exists")

    monkeypatch.setattr(strokes, "parse_strokes", no_parsing)
    again = strokes.load_omniglot_strokes(SUBSET, cache_dir=cache)
    np.testing.assert_array_equal(again.sequences, loaded.sequences)
    assert again.class_names == loaded.class_names


def test_missing_and_broken_stroke_files_are_masked_and_reported(
    tmp_path, zips, monkeypatch, caplog
):
    images, stroke_files = zips
    folder = tmp_path / "omniglot"
    folder.mkdir()
    keep = ("/Greek/character01/", "/Latin/character02/")
    missing, broken = "Greek/character01/0394_03", "Latin/character02/0684_11"
    with zipfile.ZipFile(folder / f"images_{SUBSET}.zip", "w") as out:
        for m in images.namelist():
            if any(k in m for k in keep):
                out.writestr(m, images.read(m))
    with zipfile.ZipFile(folder / f"strokes_{SUBSET}.zip", "w") as out:
        for m in stroke_files.namelist():
            if any(k in m for k in keep) and missing not in m:
                out.writestr(m, b"START\n1,2\nBREAK\n" if broken in m else stroke_files.read(m))
        out.writestr(f"__MACOSX/strokes_{SUBSET}/Greek/._character01", b"junk")
    monkeypatch.setattr(archives, "KNOWN_MD5", {})  # Accept the edited archives.
    with caplog.at_level(logging.WARNING):
        loaded = strokes.load_omniglot_strokes(SUBSET, tmp_path, cache_dir=tmp_path / "cache")
    assert loaded.mask.shape == (2, 20) and (~loaded.mask).sum() == 2
    assert not loaded.mask[0, list(loaded.drawing_ids[0]).index("0394_03")]
    assert not loaded.mask[1, list(loaded.drawing_ids[1]).index("0684_11")]
    assert (loaded.sequences[~loaded.mask] == 0).all()
    assert "2 of 40 drawings have no usable stroke file" in caplog.text
    assert "0394_03.txt is missing" in caplog.text and "malformed line '1,2'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # Reported again when read from the cache.
        strokes.load_omniglot_strokes(SUBSET, tmp_path, cache_dir=tmp_path / "cache")
    assert "2 of 40 drawings" in caplog.text


def test_multimodal_splits_are_aligned(cache):
    kwargs = dict(cache_dir=cache, length=64)
    pairs = strokes.omniglot_multimodal_class_splits(**kwargs)
    image_splits = omniglot.omniglot_splits(cache_dir=cache)
    trees = strokes.omniglot_multimodal_splits(**kwargs)
    for split in ("train", "val", "test"):
        images, sequences = pairs[split]
        assert images.class_names == sequences.class_names == image_splits[split].class_names
        np.testing.assert_array_equal(images.drawing_ids, sequences.drawing_ids)
        np.testing.assert_array_equal(images.drawing_ids, image_splits[split].drawing_ids)
        tree = trees[split]
        classes = image_splits[split].num_classes
        assert tree["image"].shape == (classes, 20, 28, 28, 1)
        assert tree["strokes"].shape == (classes, 20, 64, 3)
        assert tree["mask"].shape == (classes, 20, 2) and tree["mask"].dtype == np.float32
        assert (tree["mask"] == 1.0).all()
        np.testing.assert_array_equal(tree["image"], image_splits[split].images)
    train = trees["train"]["strokes"]
    assert len(train) == 4 * 110
    for k in (1, 2, 3):
        np.testing.assert_allclose(train[k::4], strokes.rotate_sequences(train[0::4], k))
    assert not np.allclose(train[1::4], train[0::4])
