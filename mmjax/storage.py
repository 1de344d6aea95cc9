"""Run files on local disk or cloud storage (``gs://``, ``s3://``) through one path type.

Every file the trainer, the evaluation, the data cache and the benchmarks write or read goes
through these functions, so ``--workdir gs://bucket/run`` works on a TPU VM. Paths are
`etils.epath.Path` (what orbax uses); a local path keeps using the operating system.

Atomic writes. A reader must never see a half-written file, and a crash must never leave
one that reads as whole:

- **local** (``has_atomic_rename``): the data goes to ``<name>.tmp-<pid>`` beside the file,
  which is then renamed over it (``os.replace``, atomic on POSIX).
- **cloud storage** (no atomic rename: ``gs://`` renames by copy + delete): write, then
  commit. The commit marker ``<name>.commit`` (JSON ``{"bytes", "sha256"}``) is deleted, the
  data is written to ``<name>``, and a new marker is written last. Readers (`read_bytes`,
  `read_text`, `exists`) see a cloud file only when its marker exists and matches its size
  and hash: a file whose write was cut off (or whose marker is not yet written) is
  *uncommitted* and read as absent. Between the first and the last step a reader sees no
  file (not the old one); writers of one file are one process (the run's writer).

Appends (``metrics.jsonl``, ``config_history.jsonl``): local files are appended to; cloud
objects cannot be, so `append_text` rewrites the whole file (committed as above).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import uuid

from etils import epath

COMMIT_SUFFIX = ".commit"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
    """Whether ``path`` is on the local file system (no ``scheme://`` prefix)."""
    return _URI.match(os.fspath(path)) is None


def as_path(path: PathLike) -> epath.Path:
    """``path`` as an `etils.epath.Path`."""
    return epath.Path(os.fspath(path))


def has_atomic_rename(path: PathLike) -> bool:
    """Whether files under ``path`` are written by an atomic rename (else: commit marker)."""
    return is_local(path)


def join(path: PathLike, *names: str) -> str:
    """``path/name/...`` as a string, keeping a ``scheme://`` prefix intact."""
    if is_local(path):
        return os.path.join(os.fspath(path), *names)
    return os.fspath(as_path(path).joinpath(*names))


def makedirs(path: PathLike) -> None:
    """Creates ``path`` and its parents (cloud folders are implicit; this is then cheap)."""
    as_path(path).mkdir(parents=True, exist_ok=True)


def _marker(path: PathLike) -> epath.Path:
    return as_path(os.fspath(path) + COMMIT_SUFFIX)


def _digest(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (rename locally, commit marker elsewhere)."""
    if has_atomic_rename(path):
        path = os.fspath(as_path(path))
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    target, marker = as_path(path), _marker(path)
    marker.unlink(missing_ok=True)  # from here the old content is no longer committed
    target.write_bytes(data)
    marker.write_text(json.dumps(_digest(data)))


def write_text(path: PathLike, text: str) -> None:
    """`write_bytes` of ``text`` in UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def _committed(path: PathLike) -> bytes | None:
    """The bytes of a committed cloud file, or None when it is absent or uncommitted."""
    target, marker = as_path(path), _marker(path)
    try:
        expected = json.loads(marker.read_text())
        data = target.read_bytes()
    except (OSError, ValueError):
        return None
    return data if isinstance(expected, dict) and _digest(data) == expected else None


def read_bytes(path: PathLike) -> bytes:
    """The content of ``path``.

    Raises:
      FileNotFoundError: it does not exist, or (cloud storage) it is not committed.
    """
    if is_local(path):
        with open(as_path(path), "rb") as f:
            return f.read()
    data = _committed(path)
    if data is None:
        raise FileNotFoundError(f"{os.fspath(path)} does not exist or is not committed")
    return data


def read_text(path: PathLike) -> str:
    """`read_bytes` decoded as UTF-8."""
    return read_bytes(path).decode("utf-8")


def exists(path: PathLike) -> bool:
    """Whether ``path`` exists (cloud storage: and is committed, or is a folder)."""
    target = as_path(path)
    if is_local(path):
        return target.exists()
    if target.is_dir():
        return True
    return _committed(path) is not None


def append_text(path: PathLike, text: str) -> None:
    """Appends ``text`` to ``path`` (cloud storage: rewrites the committed file with it)."""
    if is_local(path):
        with open(as_path(path), "a") as f:
            f.write(text)
        return
    old = read_text(path) if exists(path) else ""
    write_text(path, old + text)


def remove(path: PathLike) -> None:
    """Deletes ``path`` (and its commit marker); a missing file is not an error."""
    as_path(path).unlink(missing_ok=True)
    if not is_local(path):
        _marker(path).unlink(missing_ok=True)


def upload_tree(local_dir: PathLike, target: PathLike) -> None:
    """Copies the files under the local folder ``local_dir`` to ``target`` (committed each)."""
    local_dir = pathlib.Path(local_dir)
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        relative = file.relative_to(local_dir).parts
        destination = join(target, *relative)
        makedirs(os.path.dirname(destination) if is_local(target) else as_path(destination).parent)
        if is_local(target):
            shutil.copyfile(file, destination)
        else:
            write_bytes(destination, file.read_bytes())


def buffer_savefig(figure, path: PathLike, **kwargs) -> None:
    """Saves a matplotlib ``figure`` to ``path`` atomically (format from the suffix)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(os.fspath(path))[1][1:] or "png", **kwargs)
    write_bytes(path, buffer.getvalue())
