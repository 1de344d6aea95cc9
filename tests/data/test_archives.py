"""Tests for mmjax.data.archives: locating, verifying, downloading and caching archives."""

import io
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import urllib.error
import zipfile

import numpy as np
import pytest

from mmjax.data import archives

SMALL1 = "images_background_small1.zip"


@pytest.fixture(scope="module")
def real_root() -> pathlib.Path:
    return pathlib.Path(os.environ["MMJAX_DATA_DIR"]).resolve()


def _write_zip(path: pathlib.Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_known_md5_lists_the_seven_archives():
    KNOWN = archives.KNOWN_MD5
    assert len(KNOWN) == 7
    assert KNOWN["images_background_small1.zip"] == "e704a628b5459e08445c13499850abc4"
    assert KNOWN["images_background.zip"] == "68d2efa1b9178cc56df9314c21c6e718"
    assert KNOWN["images_evaluation.zip"] == "6b91aef0f799c5bb55b94e3f2daec811"
    assert all(len(v) == 32 for v in KNOWN.values())


def test_resolve_data_dir_accepts_parent_or_omniglot_folder(real_root, monkeypatch):
    assert archives.resolve_data_dir(real_root) == real_root / "omniglot"
    assert archives.resolve_data_dir(real_root / "omniglot") == real_root / "omniglot"
    monkeypatch.setenv("MMJAX_DATA_DIR", str(real_root))
    assert archives.resolve_data_dir() == real_root / "omniglot"


def test_resolve_data_dir_argument_beats_environment(tmp_path, real_root, monkeypatch):
    (tmp_path / "omniglot").mkdir()
    monkeypatch.setenv("MMJAX_DATA_DIR", str(real_root))
    assert archives.resolve_data_dir(tmp_path) == tmp_path / "omniglot"


def test_missing_data_dir_message(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="MMJAX_DATA_DIR") as info:
        archives.resolve_data_dir(tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message and "--data_dir" in message
    assert "images_background_small1.zip" in message and "omniglot/" in message
    monkeypatch.delenv("MMJAX_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="MMJAX_DATA_DIR is not set"):
        archives.resolve_data_dir()


def test_archive_path_finds_and_verifies_real_archive(real_root):
    path = archives.archive_path("images_background_small1", real_root)
    assert path == real_root / "omniglot" / SMALL1
    assert archives.archive_path(SMALL1, real_root) == path
    assert archives.archive_md5(path) == archives.KNOWN_MD5[SMALL1]


def test_missing_archive_message(tmp_path):
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(FileNotFoundError, match="images_background_small2.zip") as info:
        archives.archive_path("images_background_small2", tmp_path)
    assert "download=True" in str(info.value)
    with pytest.raises(ValueError, match="name='../evil'"):
        archives.archive_path("../evil", tmp_path)


def test_truncated_archive_names_the_file(tmp_path, real_root):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    data = (real_root / "omniglot" / SMALL1).read_bytes()
    (folder / SMALL1).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid zip") as info:
        archives.archive_path("images_background_small1", tmp_path)
    assert str(folder / SMALL1) in str(info.value)


def test_md5_mismatch_message(tmp_path):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    _write_zip(folder / SMALL1, {"images_background_small1/x.txt": b"not the real thing"})
    actual = archives.archive_md5(folder / SMALL1)
    with pytest.raises(ValueError, match="md5 mismatch") as info:
        archives.archive_path("images_background_small1", tmp_path)
    message = str(info.value)
    assert str(folder / SMALL1) in message
    assert archives.KNOWN_MD5[SMALL1] in message and actual in message


def test_unknown_archive_is_only_checked_for_zip_validity(tmp_path):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    _write_zip(folder / "my_archive.zip", {"a.txt": b"a"})
    assert archives.archive_path("my_archive", folder) == folder / "my_archive.zip"


def test_md5_is_memoised_and_tracks_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    first = archives.archive_md5(path)
    hits = archives._md5_of.cache_info().hits
    assert archives.archive_md5(path) == first == "900150983cd24fb0d6963f7d28e17f72"
    assert archives._md5_of.cache_info().hits == hits + 1
    path.write_bytes(b"abcd")  # New size: recomputed.
    assert archives.archive_md5(path) == "e2fc714c4727ee9395f324cd2e7f331f"


def test_download_offline_raises_runtime_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(archives.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="offline") as info:
        archives.archive_path("images_background_small1", tmp_path, download=True)
    assert str(tmp_path / "omniglot" / SMALL1) in str(info.value)
    assert list((tmp_path / "omniglot").iterdir()) == []  # No partial file left.


def test_download_writes_verified_archive(tmp_path, real_root, monkeypatch):
    data = (real_root / "omniglot" / SMALL1).read_bytes()
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO(data)

    monkeypatch.setattr(archives.urllib.request, "urlopen", fake_urlopen)
    path = archives.archive_path("images_background_small1", tmp_path, download=True)
    assert urls == [
        "https://github.com/brendenlake/omniglot/raw/master/python/images_background_small1.zip"
    ]
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == [SMALL1]


def test_download_with_wrong_content_leaves_nothing(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x", b"x")
    monkeypatch.setattr(
        archives.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(buffer.getvalue())
    )
    with pytest.raises(ValueError, match="md5 mismatch"):
        archives.archive_path("images_background_small1", tmp_path, download=True)
    assert list((tmp_path / "omniglot").iterdir()) == []


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MMJAX_CACHE_DIR", raising=False)
    assert archives.cache_dir() == tmp_path / "home" / ".cache" / "mmjax"
    monkeypatch.setenv("MMJAX_CACHE_DIR", str(tmp_path / "env"))
    assert archives.cache_dir() == tmp_path / "env"
    assert archives.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert (tmp_path / "arg").is_dir()


def test_cache_file_name_has_md5_and_every_parameter(tmp_path):
    path = archives.cache_file(
        "omniglot_images-x", "d41d8cd98f00b204e9800998ecf8427e", tmp_path, image_size=28, v=1
    )
    assert (
        path
        == tmp_path / "omniglot_images-x-d41d8cd98f00b204e9800998ecf8427e-image_size=28-v=1.npz"
    )
    assert archives.cache_file("k", "m", tmp_path, image_size=14, v=1) != archives.cache_file(
        "k", "m", tmp_path, image_size=28, v=1
    )
    assert archives.cache_file("k", "m1", tmp_path) != archives.cache_file("k", "m2", tmp_path)
    with pytest.raises(ValueError, match="unsafe"):
        archives.cache_file("k", "m", tmp_path, path="a/b")


def test_atomic_save_npz_round_trip_and_failure(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "a.npz"
    archives.atomic_save_npz(path, x=np.arange(3), names=np.array(["a", "b"]))
    loaded = archives.load_npz(path)
    np.testing.assert_array_equal(loaded["x"], np.arange(3))
    assert list(loaded["names"]) == ["a", "b"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npz"]

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(archives.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        archives.atomic_save_npz(path, x=np.zeros(5))
    np.testing.assert_array_equal(archives.load_npz(path)["x"], np.arange(3))  # Untouched.
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npz"]  # No temp file left.


def test_cache_under_a_file_is_a_warning_not_an_error(tmp_path, monkeypatch, caplog):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(archives.CACHE_DIR_ENV, str(tmp_path / "file" / "cache"))
    path = archives.cache_file("k", "m", v=1)  # naming the file creates nothing
    assert path == tmp_path / "file" / "cache" / "k-m-v=1.npz"
    assert archives.load_npz(path) is None
    assert archives.save_cache_npz(path, x=np.arange(3)) is False
    assert caplog.messages == [
        (
            f"Cannot write the cache file {path} (Not a directory: {tmp_path}/file/cache); going "
            "on without the cache. Set MMJAX_CACHE_DIR (or data.cache_dir) to a writable folder "
            "to keep the decoded arrays."
        )
    ]
    assert archives.save_cache_npz(tmp_path / "ok" / "a.npz", x=np.arange(3)) is True


def test_load_npz_ignores_corrupt_cache(tmp_path, caplog):
    assert archives.load_npz(tmp_path / "missing.npz") is None
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    assert archives.load_npz(tmp_path / "bad.npz") is None
    assert "unreadable cache file" in caplog.text


def test_copy_of_real_archive_under_other_dir_verifies(tmp_path, real_root):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    shutil.copy(real_root / "omniglot" / SMALL1, folder / SMALL1)
    assert archives.archive_path("images_background_small1", folder).is_file()


def test_load_npz_refuses_truncated_or_incomplete_cache(tmp_path, caplog):
    path = tmp_path / "c.npz"
    archives.atomic_save_npz(path, images=np.arange(50000, dtype=np.uint8), names=np.array(["a"]))
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 100):  # end, middle and header cut off
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        assert archives.load_npz(tmp_path / "cut.npz") is None, cut
    corrupt = bytearray(data)
    corrupt[len(data) // 3] ^= 0xFF  # one flipped byte inside the array data: bad CRC
    (tmp_path / "flip.npz").write_bytes(bytes(corrupt))
    assert archives.load_npz(tmp_path / "flip.npz") is None
    assert archives.load_npz(path, ("images", "names"))["images"].size == 50000
    assert archives.load_npz(path, ("images", "drawing_ids")) is None
    assert "without ['drawing_ids']" in caplog.text


# Saves ``new`` over the cache file argv[1], but its np.savez writes half of the data and
# then waits (printing "writing") to be killed.
_KILLED_SAVE = r"""
import sys, time
import numpy as np
from mmjax.data import archives

def half_then_wait(f, **arrays):
    f.write(b"PK" + b"\0" * 1000)
    f.flush()
    print("writing", flush=True)
    while True:
        time.sleep(1)

archives.np.savez = half_then_wait
archives.atomic_save_npz(sys.argv[1], x=np.full(10, 2.0))
"""


def test_sigkill_during_cache_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "cache.npz"
    archives.atomic_save_npz(path, x=np.full(10, 1.0))
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "writing\n"
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    np.testing.assert_array_equal(archives.load_npz(path)["x"], np.full(10, 1.0))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "cache.npz"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".cache.npz.")  # hidden temp file
    archives.atomic_save_npz(path, x=np.full(10, 3.0))  # a later save still works
    np.testing.assert_array_equal(archives.load_npz(path)["x"], np.full(10, 3.0))
