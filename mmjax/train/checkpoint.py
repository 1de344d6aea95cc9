"""Atomic, resumable checkpoints of the whole training state with orbax."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves/restores a state pytree under ``<workdir>/checkpoints/<step>``.

    Orbax writes each checkpoint into a temporary directory and renames it when complete,
    so a crash (even ``kill -9``) during a save never leaves a checkpoint that loads
    wrongly; an incomplete one is ignored on restore.
    """

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(os.path.join(os.fspath(workdir), "checkpoints"))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
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
        self._manager.close()
