"""Atomic, resumable checkpoints of the whole training state with orbax."""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

# Orbax writes step ``n`` into ``n<TEMPORARY_SUFFIX>`` and renames it to ``n`` when complete.
TEMPORARY_SUFFIX = ocp.path.atomicity.TMP_DIR_SUFFIX


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
        self.directory = os.path.abspath(os.path.join(os.fspath(workdir), "checkpoints"))
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
        if not os.path.isdir(self.directory):
            return []
        names = sorted(n for n in os.listdir(self.directory) if TEMPORARY_SUFFIX in n)
        for name in names:
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
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
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        """Waits for pending saves and releases the checkpoint manager."""
        self._manager.close()
