"""A run's workdir: one trainer at a time, and ``config.json`` as the run's identity.

The identity rule: a workdir holds one run, named by its ``config.json``. Resuming it with a
config that differs in any key is refused (the error lists each key, old -> new) unless the
caller passes ``override=True`` (``mmjax train --override``): then ``config.json`` takes
the new values and ``config_history.jsonl`` records them with the step where they took
effect. Keys that say how a run is driven, logged, measured or where its files are, but not
what is trained (`FREE_KEYS`, and any ``*.remat`` / ``*.task_batching``), may change
without ``--override``: they are recorded the same way. So ``--set num_steps=...``
extends a run (it cannot shorten one below the step it has reached).

Only the process that writes the run's outputs calls the writing functions (``writer=True``;
in multi-host runs ``jax.process_index() == 0``).

A workdir may be on cloud storage (``gs://bucket/run``): every file goes through
`mmjax.storage` (atomic writes by rename locally, by a commit marker there). The lock is then
best-effort, see `acquire_lock`.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
import uuid
from typing import Any, Self

import ml_collections

from mmjax import storage

_LOG = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
LOCK_FILE = "train.lock"

# Keys that may differ on resume without --override: how long the run goes, how it is logged,
# checkpointed, measured, executed and where its data lives; none changes what is trained.
FREE_KEYS = (
    "num_steps",
    "log_every",
    "eval_every",
    "val_episodes",
    "checkpoint_every",
    "keep_checkpoints",
    "test_episodes",
    "eval_batch_size",
    "parallel",
    "model.conv_impl",
    "data.data_dir",
    "data.cache_dir",
    "data.download",
)
FREE_SUFFIXES = (".remat", ".task_batching")

_ABSENT = "<absent>"
_GUARD_TIMEOUT_S = 10.0


class WorkdirError(ValueError):
    """A workdir that cannot be used as asked (the CLI prints it on one line, exit status 2)."""


class WorkdirLockedError(WorkdirError):
    """Another live ``mmjax train`` holds the workdir's lock."""


class ConfigMismatchError(WorkdirError):
    """Resuming a run with a config that differs in keys of the run's identity."""


def ensure_workdir(workdir: str | os.PathLike) -> str:
    """Creates ``workdir`` (and parents); returns it as ``str``.

    Raises:
      WorkdirError: it cannot be created (a path under a file, no permission, read-only).
    """
    workdir = os.fspath(workdir)
    try:
        storage.makedirs(workdir)
    except OSError as error:
        raise WorkdirError(_unwritable(workdir, error)) from None
    return workdir


def _unwritable(path: str, error: OSError) -> str:
    reason = error.strerror or type(error).__name__
    return (
        f"workdir {path!r} is not a writable folder ({reason}: {error.filename or path}); "
        "pass --workdir (or train(workdir=...)) a folder you can write"
    )


# ----------------------------------------------------------------------------- the lock


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot, from /proc), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def _pid_alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` runs on this host and (when ``start`` is known) is the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if os.path.isdir("/proc/self"):
        now = _process_start(pid)
        if now is None:  # gone or a zombie
            return False
        if start is not None and now != start:  # the pid was reused by another process
            return False
    return True


class _DirectoryGuard:
    """``flock`` on the workdir while the lock file is inspected (bounded wait)."""

    def __init__(self, directory: str):
        self._fd = None
        try:
            self._fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        deadline = time.monotonic() + _GUARD_TIMEOUT_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self._fd)
                    raise WorkdirLockedError(
                        f"{directory} stayed locked by another process for "
                        f"{_GUARD_TIMEOUT_S:.0f} s while it checked {LOCK_FILE}; try again"
                    ) from None
                time.sleep(0.05)
            except OSError:  # a file system without flock: go on with the lock file alone
                return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)


class WorkdirLock:
    """The workdir's ``train.lock`` held by this process; `release` (or ``with``) frees it.

    Attributes:
      path: the lock file, or None for a lock that was not taken (``writer=False``).
      holder: what the file records: ``pid``, ``host``, ``start``, ``since``, ``command``.
    """

    def __init__(self, path: str | None, holder: dict | None = None):
        self.path = path
        self.holder = holder or {}

    def release(self) -> None:
        """Deletes the lock file if it is still this process's; idempotent."""
        if self.path is None:
            return
        if _read_holder(self.path).get("token") == self.holder.get("token"):
            try:
                storage.remove(self.path)
            except FileNotFoundError:
                pass
        self.path = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(path: str) -> dict:
    try:
        holder = json.loads(storage.read_text(path))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe_holder(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"since {holder.get('since', '?')}"
    )


def acquire_lock(workdir: str | os.PathLike, *, writer: bool = True) -> WorkdirLock:
    """Takes ``<workdir>/train.lock`` for this process (created with ``O_CREAT | O_EXCL``).

    The file records pid, host and process start time. A lock left by a dead process on this
    host (or by a reused pid) is taken over with a warning; a live holder, or one on another
    host, makes this raise at once (no waiting).

    On cloud storage (a ``scheme://`` workdir) there is no create-exclusive through epath, so
    the lock is best-effort, with a warning: a lock file present (committed) refuses the run
    as above; otherwise this process writes its holder record, waits
    `CLOUD_LOCK_SETTLE_S` and reads it back, and raises if another process's record won.
    Two trainers started within that window on different hosts can both pass: the lock
    guards against the usual mistake (a second run in a live run's workdir), not against
    a race; stale locks of other hosts are never taken over (delete the file by hand).

    Args:
      workdir: the run's folder; created if missing.
      writer: False returns an empty lock and touches nothing (processes other than 0).

    Raises:
      WorkdirLockedError: another ``mmjax train`` holds the workdir (message names it).
      WorkdirError: the workdir cannot be created or written.
    """
    if not writer:
        return WorkdirLock(None)
    workdir = ensure_workdir(workdir)
    path = storage.join(workdir, LOCK_FILE)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _process_start(os.getpid()),
        "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
        "token": uuid.uuid4().hex,
    }
    if not storage.is_local(workdir):
        return _acquire_cloud_lock(workdir, path, holder)
    with _DirectoryGuard(workdir):
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = _read_holder(path)
                if not _is_stale(other):
                    raise WorkdirLockedError(_locked_message(workdir, path, other)) from None
                _LOG.warning(
                    "Taking over the stale lock %s of a process that is gone (%s)",
                    path,
                    _describe_holder(other),
                )
                os.unlink(path)
                continue
            except OSError as error:
                raise WorkdirError(_unwritable(workdir, error)) from None
            with os.fdopen(fd, "w") as f:
                json.dump(holder, f)
            return WorkdirLock(path, holder)
    raise WorkdirLockedError(_locked_message(workdir, path, _read_holder(path)))


CLOUD_LOCK_SETTLE_S = 1.0


def _acquire_cloud_lock(workdir: str, path: str, holder: dict) -> WorkdirLock:
    """The best-effort lock of a cloud workdir (see `acquire_lock`)."""
    _LOG.warning(
        "%s is on cloud storage: its lock %s is best-effort (no create-exclusive there); "
        "do not start two trainers in it at once",
        workdir,
        LOCK_FILE,
    )
    if storage.exists(path):
        other = _read_holder(path)
        if not _is_stale(other):
            raise WorkdirLockedError(_locked_message(workdir, path, other))
        _LOG.warning(
            "Taking over the stale lock %s of a process that is gone (%s)",
            path,
            _describe_holder(other),
        )
    try:
        storage.write_text(path, json.dumps(holder))
    except OSError as error:
        raise WorkdirError(_unwritable(workdir, error)) from None
    time.sleep(CLOUD_LOCK_SETTLE_S)
    won = _read_holder(path)
    if won.get("token") != holder["token"]:
        raise WorkdirLockedError(_locked_message(workdir, path, won))
    return WorkdirLock(path, holder)


def _is_stale(holder: dict) -> bool:
    if not holder or holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and not _pid_alive(pid, holder.get("start"))


def _locked_message(workdir: str, path: str, holder: dict) -> str:
    if not holder:
        return (
            f"{workdir} is locked by {path}, which names no process (unreadable); delete it "
            "if no mmjax train runs in this workdir"
        )
    return (
        f"{workdir} is in use by another mmjax train ({_describe_holder(holder)}; lock "
        f"{path}); wait for it, stop it or use another --workdir (delete the lock file only "
        "if that process is gone)"
    )


# ----------------------------------------------------------------------------- identity


def read_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Reads a workdir's ``config.json``.

    Raises:
      FileNotFoundError: no such file.
      WorkdirError: it is not a JSON object (truncated, edited); the message names the file.
    """
    path = os.fspath(path)
    try:
        data = json.loads(storage.read_text(path))
    except json.JSONDecodeError as error:
        raise WorkdirError(f"{path} is not valid JSON (truncated or edited?): {error}") from None
    if not isinstance(data, dict):
        raise WorkdirError(f"{path} holds a JSON {type(data).__name__}, not a config object")
    return ml_collections.ConfigDict(data)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _as_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json())


def config_diff(
    old: ml_collections.ConfigDict, new: ml_collections.ConfigDict
) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for each leaf key whose JSON value differs (``'<absent>'`` if missing)."""
    a, b = _flat(_as_json(old)), _flat(_as_json(new))
    return {
        key: (a.get(key, _ABSENT), b.get(key, _ABSENT))
        for key in sorted(set(a) | set(b))
        if a.get(key, _ABSENT) != b.get(key, _ABSENT)
    }


def is_free_key(key: str) -> bool:
    """Whether ``key`` may change on resume without changing the run's identity."""
    return key in FREE_KEYS or key.endswith(FREE_SUFFIXES)


def _format(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key}: {_show(old)} -> {_show(new)}" for key, (old, new) in changes.items())


def _show(value: Any) -> str:
    return value if value == _ABSENT else repr(value)


def _has_checkpoints(workdir: str) -> bool:
    directory = storage.as_path(storage.join(workdir, "checkpoints"))
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_identity(
    workdir: str | os.PathLike, config: ml_collections.ConfigDict, *, override: bool = False
) -> dict[str, tuple[Any, Any]] | None:
    """Compares ``config`` with the run in ``workdir``; reads only.

    Returns:
      ``{key: (old, new)}`` of every difference (empty when equal), or None for a new run.

    Raises:
      ConfigMismatchError: a key outside `FREE_KEYS` differs and ``override`` is False, or the
        workdir has checkpoints but no (readable) ``config.json``.
    """
    workdir = os.fspath(workdir)
    path = storage.join(workdir, CONFIG_FILE)
    hint = (
        "resume with the run's config, use another --workdir, or pass --override to go on "
        f"with the new one (recorded in {HISTORY_FILE})"
    )
    if not storage.exists(path):
        if _has_checkpoints(workdir) and not override:
            raise ConfigMismatchError(
                f"{workdir} holds checkpoints but no {CONFIG_FILE}, so its config is unknown; "
                + hint
            )
        return None
    try:
        old = read_config(path)
    except WorkdirError as error:
        if override:
            return {"config.json": ("<unreadable>", "<this config>")}
        raise ConfigMismatchError(f"{error}; {hint}") from None
    changes = config_diff(old, config)
    identity = {k: v for k, v in changes.items() if not is_free_key(k)}
    if identity and not override:
        raise ConfigMismatchError(
            f"{path} records a different run: {len(identity)} key(s) differ "
            f"({_format(identity)}); {hint}"
        )
    return changes


def record_config(
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    changes: dict[str, tuple[Any, Any]] | None,
    *,
    step: int,
    writer: bool = True,
) -> None:
    """Writes ``config.json`` (new run, or a resume that changed it) and logs the change.

    Each change of a resumed run appends one line to ``config_history.jsonl``:
    ``{"time", "step", "override", "changes": {key: [old, new]}}``, ``step`` being the step the
    new values apply from.

    Args:
      workdir: the run's folder.
      config: the config the run goes on with.
      changes: what `check_identity` returned.
      step: the restored step (0 for a new run).
      writer: False does nothing (processes other than 0).
    """
    if not writer or changes == {}:
        return
    workdir = os.fspath(workdir)
    _write_atomically(storage.join(workdir, CONFIG_FILE), config.to_json(indent=2))
    if changes is None:
        return
    override = any(not is_free_key(k) for k in changes)
    record = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "step": int(step),
        "override": override,
        "changes": {key: [old, new] for key, (old, new) in changes.items()},
    }
    storage.append_text(storage.join(workdir, HISTORY_FILE), json.dumps(record) + "\n")
    kind = "--override" if override else "settings that keep the run's identity"
    print(f"Config changed from step {step} ({kind}): {_format(changes)}; see {HISTORY_FILE}")


def check_num_steps(config: ml_collections.ConfigDict, step: int, workdir: str) -> None:
    """Raises `WorkdirError` when ``config.num_steps`` is below the restored ``step``."""
    if config.num_steps < step:
        raise WorkdirError(
            f"num_steps={config.num_steps} is below step {step}, which the run in {workdir} "
            f"has reached; a run cannot be shortened (set num_steps >= {step})"
        )


def _write_atomically(path: str, text: str) -> None:
    try:
        storage.write_text(path, text)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM):
            raise WorkdirError(_unwritable(os.path.dirname(path), error)) from None
        raise
