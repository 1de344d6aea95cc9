"""Locating, downloading, verifying and caching the Omniglot archives.

The archives are read where the user put them (``--data_dir`` or the ``MMJAX_DATA_DIR``
environment variable); decoded arrays are cached as ``.npz`` files whose names carry the
source archive's md5 and every parameter that changes their content, so that a changed
source or a changed parameter builds a new cache file instead of reusing a stale one.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import logging
import os
import pathlib
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Any

import numpy as np

from mmjax import storage

_LOG = logging.getLogger(__name__)

DATA_DIR_ENV = "MMJAX_DATA_DIR"
CACHE_DIR_ENV = "MMJAX_CACHE_DIR"
DOWNLOAD_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"

KNOWN_MD5: dict[str, str] = {
    "images_background_small1.zip": "e704a628b5459e08445c13499850abc4",
    "strokes_background_small1.zip": "830eb54f8a9297820a4471fcc4f9d9bc",
    "images_background_small2.zip": "b75a71a51d3b13f821f212756fe481fd",
    "strokes_background_small2.zip": "84d9defc54b809861ffd9886798dcffb",
    "all_runs.zip": "e8996daecdf12afeeb4a53a179f06b19",
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}

_EXPECTED_LAYOUT = (
    "Put the Omniglot archives (e.g. images_background_small1.zip, "
    "images_background_small2.zip, strokes_background_small1.zip, "
    "strokes_background_small2.zip from "
    "https://github.com/brendenlake/omniglot/tree/master/python) "
    "in a folder named 'omniglot/' and pass the folder that contains it (or the 'omniglot/' "
    f"folder itself) as --data_dir / data_dir=..., or set the {DATA_DIR_ENV} environment variable."
)


def resolve_data_dir(
    data_dir: str | os.PathLike | None = None, *, create: bool = False
) -> pathlib.Path:
    """Returns the ``omniglot/`` folder holding the archives.

    Args:
      data_dir: the folder that contains ``omniglot/``, or the ``omniglot/`` folder itself.
        ``None`` reads the ``MMJAX_DATA_DIR`` environment variable.
      create: create ``<data_dir>/omniglot`` when it does not exist (used before a download).

    Raises:
      FileNotFoundError: no folder given, or it holds no ``omniglot/`` folder.
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        if data_dir is None:
            raise FileNotFoundError(
                f"No Omniglot data folder given: data_dir=None and {DATA_DIR_ENV} is not set. "
                + _EXPECTED_LAYOUT
            )
    root = pathlib.Path(data_dir).expanduser()
    if root.name == "omniglot" and root.is_dir():
        return root
    if (root / "omniglot").is_dir():
        return root / "omniglot"
    if create:
        target = root if root.name == "omniglot" else root / "omniglot"
        target.mkdir(parents=True, exist_ok=True)
        return target
    raise FileNotFoundError(
        f"data_dir={str(root)!r} (from the argument or {DATA_DIR_ENV}) holds no 'omniglot/' "
        "folder and is not one. " + _EXPECTED_LAYOUT
    )


def cache_dir(cache_dir: str | os.PathLike | None = None, *, create: bool = True) -> pathlib.Path:
    """Returns (and, with ``create``, creates) the cache folder.

    Precedence: the argument, then ``MMJAX_CACHE_DIR``, then ``~/.cache/mmjax``. A cloud
    folder (``gs://...``) is returned as an `etils.epath.Path` (`mmjax.storage`).
    """
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV) or pathlib.Path.home() / ".cache" / "mmjax"
    if not storage.is_local(cache_dir):
        path = storage.as_path(cache_dir)
        if create:
            storage.makedirs(path)
        return path
    path = pathlib.Path(cache_dir).expanduser()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=64)
def _md5_of(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # Only part of the memoisation key.
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_md5(path: str | os.PathLike) -> str:
    """md5 hex digest of a file, memoised per (path, size, mtime)."""
    stat = os.stat(path)
    return _md5_of(str(pathlib.Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _check_archive(path: pathlib.Path) -> None:
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{str(path)!r} is not a valid zip archive (truncated or corrupt download?); "
            "delete it and fetch it again."
        )
    expected = KNOWN_MD5.get(path.name)
    if expected is not None:
        actual = archive_md5(path)
        if actual != expected:
            raise ValueError(
                f"md5 mismatch for {str(path)!r}: expected {expected}, got {actual}; "
                "the file is corrupt or not the official archive. Delete it and fetch it again."
            )


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def _download(url: str, target: pathlib.Path) -> None:
    """Fetches ``url`` into a temporary file next to ``target``, verifies it, renames it."""
    handle, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    try:
        try:
            with os.fdopen(handle, "wb") as out:
                with urllib.request.urlopen(url, timeout=60) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
        except _NETWORK_ERRORS as e:
            raise RuntimeError(
                f"Could not download {url} ({e}); we seem to be offline. Download it by hand "
                f"and put it at {str(target)!r}. " + _EXPECTED_LAYOUT
            ) from e
        if not zipfile.is_zipfile(tmp_name):
            raise ValueError(
                f"the download of {url} for {str(target)!r} is not a valid zip archive"
            )
        expected, actual = KNOWN_MD5.get(target.name), archive_md5(tmp_name)
        if expected is not None and actual != expected:
            raise ValueError(
                f"md5 mismatch for the download of {url} for {str(target)!r}: expected "
                f"{expected}, got {actual}"
            )
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def archive_path(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False
) -> pathlib.Path:
    """Finds ``<name>.zip`` in the Omniglot folder, downloading it if asked, and verifies it.

    Args:
      name: archive name, with or without ``.zip`` (e.g. ``"images_background_small1"``).
      data_dir: see `resolve_data_dir`.
      download: fetch a missing archive from the official Omniglot repository.

    Returns:
      Path of the verified archive.

    Raises:
      FileNotFoundError: the archive is missing and ``download`` is False.
      RuntimeError: the download failed (offline).
      ValueError: the file is not a valid zip, or its md5 differs from `KNOWN_MD5`.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+(\.zip)?", name):
        raise ValueError(f"name={name!r} is not an archive name like 'images_background_small1'")
    stem = name[:-4] if name.endswith(".zip") else name
    folder = resolve_data_dir(data_dir, create=download)
    path = folder / f"{stem}.zip"
    if not path.is_file():
        if not download:
            raise FileNotFoundError(
                f"Archive {str(path)!r} not found (name={name!r}). Pass download=True "
                f"(--download) to fetch it, or put {stem}.zip there yourself. " + _EXPECTED_LAYOUT
            )
        _download(DOWNLOAD_URL.format(name=stem), path)
    _check_archive(path)
    return path


def cache_file(
    kind: str, md5: str, directory: str | os.PathLike | None = None, **params: Any
) -> pathlib.Path:
    """Cache path ``<cache>/<kind>-<md5>-<k>=<v>-....npz`` for arrays derived from an archive.

    Args:
      kind: what is cached, e.g. ``"omniglot_images-background_small1"``.
      md5: the md5 of every source archive, joined if several.
      directory: the cache folder, see `cache_dir`.
      **params: every parameter that changes the content.
    """
    parts = [kind, md5] + [f"{k}={params[k]}" for k in sorted(params)]
    name = "-".join(str(p) for p in parts)
    if not re.fullmatch(r"[A-Za-z0-9_.=\-()]+", name):
        raise ValueError(f"cache file name {name!r} has characters unsafe in a file name")
    return cache_dir(directory, create=False) / f"{name}.npz"


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Saves arrays to ``path`` (``.npz``) through a temporary file and an atomic rename.

    A cloud ``path`` (`mmjax.storage`) is written whole and committed by its marker instead.
    """
    if not storage.is_local(path):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        storage.write_bytes(path, buffer.getvalue())
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def save_cache_npz(path: str | os.PathLike, **arrays: np.ndarray) -> bool:
    """`atomic_save_npz` for a cache: a folder that cannot be written is a warning, not an error.

    Returns:
      Whether the file was written; when not, the warning names the folder and
      ``MMJAX_CACHE_DIR`` / ``data.cache_dir``, and the caller goes on with its arrays.
    """
    try:
        atomic_save_npz(path, **arrays)
    except OSError as error:
        _LOG.warning(
            "Cannot write the cache file %s (%s: %s); going on without the cache. Set %s "
            "(or data.cache_dir) to a writable folder to keep the decoded arrays.",
            path,
            error.strerror or type(error).__name__,
            error.filename or pathlib.Path(path).parent,
            CACHE_DIR_ENV,
        )
        return False
    return True


def load_npz(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray] | None:
    """Loads every array of a cache file; None if it is missing or unreadable (logged).

    A truncated or corrupt file (bad zip, bad CRC, short read) and a file lacking one of
    ``keys`` are unreadable: the caller rebuilds the cache, never uses partial data.
    """
    local = storage.is_local(path)
    if not (os.path.exists(path) if local else storage.exists(path)):
        return None  # on cloud storage an uncommitted file is absent too
    try:
        source = path if local else io.BytesIO(storage.read_bytes(path))
        with np.load(source, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        _LOG.warning("Ignoring unreadable cache file %s (%s); rebuilding it.", path, e)
        return None
    missing = [k for k in keys if k not in arrays]
    if missing:
        _LOG.warning("Ignoring cache file %s without %s; rebuilding it.", path, missing)
        return None
    return arrays
