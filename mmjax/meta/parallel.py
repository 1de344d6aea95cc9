"""Devices for meta-training: the task mesh, host-to-mesh placement, multi-host start-up.

:func:`mmjax.meta.step.make_step` splits the task batch across devices (``jit`` over a
:func:`task_mesh`, or ``pmap`` over a leading device axis) and averages the meta-gradient,
so it computes the same update as on one device (up to floating-point summation order).
:func:`place_tasks` and :func:`place_replicated` put host arrays on the mesh;
:func:`shard_for_pmap` adds the device axis for ``pmap``. Multi-host: call
:func:`initialize_distributed` first; the mesh then spans every process's devices.
"""

from __future__ import annotations

import os
from typing import Sequence

import chex
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

TASK_AXIS = "tasks"


_ENV = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def _env_int(name: str, value: int | None) -> int | None:
    if value is not None or not os.environ.get(_ENV[name]):
        return value
    try:
        return int(os.environ[_ENV[name]])
    except ValueError:
        raise ValueError(f"${_ENV[name]}={os.environ[_ENV[name]]!r} must be an int") from None


def initialize_distributed(
    force: bool = False,
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
    heartbeat_timeout_s: int = 100,
    shutdown_timeout_s: int = 300,
) -> bool:
    """Calls ``jax.distributed.initialize`` for a multi-host run; returns whether it did.

    It initialises when ``force`` is true or a coordinator is given (``coordinator=`` or
    ``$JAX_COORDINATOR_ADDRESS``); otherwise it returns ``False`` and reads nothing else.
    The process count and id come from the arguments, else from ``$JAX_NUM_PROCESSES`` and
    ``$JAX_PROCESS_ID``. Given none of the three, JAX's own cluster detection (Cloud TPU,
    SLURM, Open MPI, Kubernetes) supplies them, and outside such a cluster it raises
    ``ValueError``; given some, all three are required and checked (``HOST:PORT``,
    ``0 <= process_id < num_processes``). Before initialising it sets
    ``jax_cpu_collectives_implementation`` to ``"gloo"`` (for every process: it only
    matters on the CPU backend, whose cross-process collectives need it).

    The timeouts are passed to JAX: ``timeout_s`` (``initialization_timeout``) bounds the
    wait for every peer to connect, then it raises instead of hanging;
    ``heartbeat_timeout_s`` is how long a process may miss heartbeats before the
    coordinator declares it dead and every process shuts down; ``shutdown_timeout_s`` is
    how long the shutdown barrier at exit waits for the others.
    """
    coordinator = coordinator or os.environ.get(_ENV["coordinator"]) or None
    if not (force or coordinator):
        return False
    num_processes = _env_int("num_processes", num_processes)
    process_id = _env_int("process_id", process_id)
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    missing = [name for name, value in given.items() if value is None]
    flags = "--coordinator HOST:PORT --num_processes N --process_id I"
    envs = "$JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID"
    if 0 < len(missing) < 3:
        raise ValueError(
            f"distributed run with {', '.join(n for n in given if n not in missing)} but no "
            f"{', '.join(missing)}: give all of {flags} (or {envs}), or none of them on a "
            "TPU pod / SLURM / Open MPI job"
        )
    if not missing:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id={process_id} must be in [0, num_processes={num_processes})"
            )
        if ":" not in coordinator:
            raise ValueError(f"coordinator={coordinator!r} must be HOST:PORT")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator,
            num_processes,
            process_id,
            initialization_timeout=timeout_s,
            heartbeat_timeout_seconds=heartbeat_timeout_s,
            shutdown_timeout_seconds=shutdown_timeout_s,
        )
    except ValueError as error:  # no cluster detected to supply the missing values
        raise ValueError(
            f"{error} No TPU pod / SLURM / Open MPI job was detected: give {flags} (or {envs})"
        ) from None
    return True


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all global devices) with axis ``"tasks"``."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if devices.ndim != 1 or devices.size == 0:
        raise ValueError(
            f"devices must be a non-empty 1-D sequence of jax devices; got shape {devices.shape}"
        )
    return Mesh(devices, (TASK_AXIS,))


def _check_divisible(batch_size: int, num_devices: int) -> None:
    if batch_size % num_devices:
        raise ValueError(
            f"meta batch size {batch_size} is not divisible by the {num_devices} devices; "
            f"use a multiple of {num_devices}"
        )


def shard_for_pmap(tree: chex.ArrayTree, num_devices: int) -> chex.ArrayTree:
    """Reshapes leaves ``[batch, ...] -> [num_devices, batch // num_devices, ...]``."""

    def split(x):
        _check_divisible(x.shape[0], num_devices)
        return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])

    return jax.tree.map(split, tree)


def place_tasks(episodes: chex.ArrayTree, mesh: Mesh) -> chex.ArrayTree:
    """Host arrays ``[batch, ...]`` -> global arrays split along the batch over ``mesh``.

    Works multi-host (every process passes the same global arrays); ``batch`` must be a
    multiple of ``mesh.size``.
    """
    by_task = NamedSharding(mesh, P(TASK_AXIS))

    def put(x):
        _check_divisible(np.shape(x)[0], mesh.size)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, by_task, lambda index: x[index])

    return jax.tree.map(put, episodes)


def place_replicated(tree: chex.ArrayTree, mesh: Mesh) -> chex.ArrayTree:
    """Host arrays -> global arrays replicated on every device of ``mesh``."""
    replicated = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), replicated, lambda index: np.asarray(x)[index]
        ),
        tree,
    )
