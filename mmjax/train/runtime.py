"""Which runtime a notebook or script is on, and what the ``auto`` settings resolve to there."""

from __future__ import annotations

import sys

import jax

from mmjax.meta.task_batching import resolve_task_batching
from mmjax.nn.conv import resolve_conv_impl


def runtime_summary(conv_impl: str = "auto", task_batching: str | int = "auto") -> str:
    """One line: the backend (GPU, TPU or CPU; Colab or not) and the resolved settings.

    Args:
      conv_impl: ``config.model.conv_impl`` (``"auto"``, ``"im2col"`` or ``"lax"``).
      task_batching: ``config.maml.task_batching`` (``"auto"``, ``"vmap"``, ``"scan"`` or a
        chunk size).

    Returns:
      e.g. ``"runtime: local, backend cpu (1 x cpu); conv_impl 'auto' -> 'im2col';
      task_batching 'auto' -> 'scan'"``.
    """
    devices = jax.devices()
    where = "Colab" if "google.colab" in sys.modules else "local"
    return (
        f"runtime: {where}, backend {jax.default_backend()} ({len(devices)} x "
        f"{devices[0].device_kind}); conv_impl {conv_impl!r} -> "
        f"{resolve_conv_impl(conv_impl)!r}; task_batching {task_batching!r} -> "
        f"{resolve_task_batching(task_batching)!r}"
    )
