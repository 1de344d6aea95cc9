"""Atomic, resumable checkpoints of the whole training state with orbax."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from mmjax import storage

# Orbax writes step ``n`` into ``n<TEMPORARY_SUFFIX>`` and renames it to ``n`` when complete.
TEMPORARY_SUFFIX = ocp.path.atomicity.TMP_DIR_SUFFIX
# Checkpoints that fail to restore are moved to ``<workdir>/<CORRUPT_DIR>/<step>``: outside
# ``checkpoints/``, so orbax neither lists them as steps nor deletes them.
CORRUPT_DIR = "corrupt_checkpoints"

_LOG = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint step that cannot be restored (empty, truncated, or of another model)."""


def checkpoint_directory(workdir: str | os.PathLike) -> str:
    """``<workdir>/checkpoints``: absolute when local, the URI itself on cloud storage.

    Orbax writes the arrays with tensorstore, whose drivers are the local file system and
    ``gs://`` (``s3://``); a workdir on another ``scheme://`` cannot hold checkpoints.
    """
    if storage.is_local(workdir):
        return os.path.abspath(os.path.join(os.fspath(workdir), "checkpoints"))
    return storage.join(workdir, "checkpoints")


class Checkpointer:
    """Saves/restores a state pytree under ``<workdir>/checkpoints/<step>``.

    Orbax writes each checkpoint into a temporary directory ``<step>.orbax-checkpoint-tmp``
    and renames it to ``<step>`` when complete, so a crash (even ``kill -9``) during a save
    never leaves a checkpoint that loads wrongly: `latest_step` and `restore` only see
    renamed (complete) steps, and the previous checkpoint stays the latest.

    Args:
      workdir: the run's folder; checkpoints go to ``<workdir>/checkpoints``.
      max_to_keep: number of most recent checkpoints kept (int >= 1).
      clean_up_temporary: delete temporary directories left by an interrupted save when
        opening. Only the process that writes checkpoints (the trainer) may do this: a
        reader (``mmjax evaluate``) running beside it would delete a save in progress.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        max_to_keep: int = 3,
        clean_up_temporary: bool = False,
    ):
        if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"max_to_keep={max_to_keep!r} must be an int >= 1")
        self.directory = checkpoint_directory(workdir)
        # Names of the temporary directories of interrupted saves deleted when opening.
        self.removed_temporary = self.remove_temporary() if clean_up_temporary else []
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
            ),
        )

    def remove_temporary(self) -> list[str]:
        """Deletes the temporary directories of interrupted saves; returns their names."""
        directory = epath.Path(self.directory)
        if not directory.is_dir():
            return []
        names = sorted(p.name for p in directory.iterdir() if TEMPORARY_SUFFIX in p.name)
        for name in names:
            if storage.is_local(self.directory):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
            else:
                (directory / name).rmtree(missing_ok=True)
        return names

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None`` when there is none."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Saves ``state`` at ``step`` and waits until it is committed on disk."""
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restores the latest (or given) step into the structure and dtypes of ``target``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        step_dir = storage.join(self.directory, str(step))
        folder = epath.Path(step_dir)
        entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if not entries:
            raise CheckpointError(f"step {step}: its directory is empty ({step_dir})")
        if not epath.Path(step_dir, "default").is_dir():
            raise CheckpointError(
                f"step {step}: its directory has no 'default' item, only "
                f"{', '.join(entries)} ({step_dir})"
            )
        _check_shapes(step, storage.join(step_dir, "default"), target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_newest(self, target: Any, *, set_aside: bool = False) -> tuple[Any, int]:
        """Restores the newest checkpoint that restores, trying older steps after a failure.

        Each step that fails is reported (a warning: step, file when known, reason). Only
        once an older step has restored, and only with ``set_aside`` (the trainer, holding
        the workdir's lock), are the failed steps moved to ``<workdir>/corrupt_checkpoints``
        (renamed, not deleted); a reader (``mmjax evaluate``) leaves every file in place.

        Returns:
          ``(state, step)``.

        Raises:
          FileNotFoundError: there is no checkpoint.
          CheckpointError: none restores (each step's reason listed; nothing is moved).
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                state = self.restore(target, step)
            except Exception as error:  # noqa: BLE001 - any unreadable step: try an older one
                reason = describe_restore_error(error, storage.join(self.directory, str(step)))
                failed.append((step, reason))
                _LOG.warning(
                    "Checkpoint step %d in %s does not restore: %s", step, self.directory, reason
                )
                continue
            for bad, _ in failed:
                if set_aside:
                    moved = self._set_aside(bad)
                    print(
                        f"Moved the checkpoint step {bad} that does not restore to {moved}",
                        file=sys.stderr,
                    )
                else:
                    print(
                        f"Checkpoint step {bad} does not restore; using step {step} "
                        "(files left in place: mmjax train in this workdir moves them aside)",
                        file=sys.stderr,
                    )
            if failed and set_aside:
                self._manager.reload()
            return state, step
        by_reason: dict[str, list[str]] = {}
        for step, reason in failed:
            by_reason.setdefault(reason, []).append(str(step))
        listing = "; ".join(f"step {', '.join(s)}: {r}" for r, s in by_reason.items())
        hint = "fix or remove them, or start a new run in another --workdir"
        if all(reason.startswith(_OTHER_MODEL) for reason in by_reason):
            hint = (
                "the config changes the shapes of the trained state, which a resumed run "
                "cannot do: start a new run in another --workdir"
            )
        raise CheckpointError(f"no checkpoint in {self.directory} restores ({listing}); {hint}")

    def _set_aside(self, step: int) -> str:
        """Renames step ``step`` to ``<workdir>/corrupt_checkpoints/<step>[.n]``; returns it."""
        parent = storage.join(os.path.dirname(self.directory), CORRUPT_DIR)
        storage.makedirs(parent)
        target, n = storage.join(parent, str(step)), 0
        while epath.Path(target).exists():
            n += 1
            target = storage.join(parent, f"{step}.{n}")
        epath.Path(storage.join(self.directory, str(step))).rename(target)
        return target

    def close(self) -> None:
        """Waits for pending saves and releases the checkpoint manager."""
        self._manager.close()


_MISMATCH = ("is not compatible with the stored shape", "tree structures do not match")
_OTHER_MODEL = "it holds the state of another model or optimizer"


def _path_name(path) -> str:
    names = (getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))) for k in path)
    return ".".join(str(n) for n in names)


def _shapes(tree: Any) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): tuple(getattr(leaf, "shape", ())) for path, leaf in leaves}


def _check_shapes(step: int, item_dir: str, target: Any) -> None:
    """Raises `CheckpointError` when the stored arrays' names or shapes differ from ``target``.

    Reads only the checkpoint's metadata; unreadable metadata is left to the restore.
    """
    try:
        stored = ocp.StandardCheckpointHandler().metadata(epath.Path(item_dir)).tree
    except Exception:  # noqa: BLE001 - a damaged checkpoint: the restore reports it
        return
    have, want = _shapes(stored), _shapes(target)
    if have == want:
        return
    differ = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    key = differ[0]
    if key not in have:
        first = f"{key} is not in the checkpoint"
    elif key not in want:
        first = f"{key} is not in this config's state"
    else:
        first = f"{key} has shape {want[key]} here, {have[key]} in the checkpoint"
    raise CheckpointError(f"step {step}: {_OTHER_MODEL}: {len(differ)} array(s) differ, {first}")


_JSON_FILES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding")


def _first_bad_json(step_dir: str) -> str | None:
    """The first of a step's JSON files (metadata) that does not parse, relative to the step."""
    for root, dirs, files in epath.Path(step_dir).walk():
        dirs[:] = sorted(d for d in dirs if d != "d" and not d.startswith("ocdbt"))
        for name in sorted(files):
            if name in _JSON_FILES or os.path.basename(os.fspath(root)) == "array_metadatas":
                path = epath.Path(root) / name
                try:
                    json.loads(path.read_text())
                except (OSError, ValueError):
                    return os.path.relpath(os.fspath(path), step_dir)
    return None


def describe_restore_error(error: BaseException, step_dir: str) -> str:
    """One line saying why ``step_dir`` did not restore, naming the file when known."""
    if isinstance(error, CheckpointError):  # 'step N: <reason>[ (<step_dir>)]'
        return str(error).split(": ", 1)[-1].removesuffix(f" ({step_dir})")
    text = str(error).split(" [tensorstore_spec", 1)[0].strip()
    text = text.splitlines()[0] if text else type(error).__name__
    files = [f for f in re.findall(r'local file "([^"]+)"', text) if not f.endswith("/")]
    if files:  # tensorstore: 'CODE: Error opening ...: ...: <reason>'
        code = text.split(":", 1)[0]
        reason = text.rsplit(": ", 1)[-1]
        name = os.path.relpath(files[-1], step_dir) if files[-1].startswith(step_dir) else files[-1]
        return f"file {name}: {reason} ({code})"
    if any(marker in text for marker in _MISMATCH):
        return f"{_OTHER_MODEL} ({text.split('. ', 1)[0].rstrip(':.')})"
    if isinstance(error, json.JSONDecodeError):
        bad = _first_bad_json(step_dir)
        where = f"file {bad}" if bad else "a metadata file"
        return f"{where} is not valid JSON (truncated?): {text}"
    return f"{type(error).__name__}: {text[:300]}"
