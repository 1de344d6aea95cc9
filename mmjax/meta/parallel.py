"""Data-parallel MAML meta-steps over devices: ``pmap`` and ``jit`` with shardings.

Both split the task batch across devices and average the meta-gradient, so they compute
the same update as the single-device :func:`mmjax.meta.maml.make_meta_train_step` (up to
floating-point summation order). Multi-host: call :func:`initialize_distributed` first;
the sharded step then runs over the global mesh of every process's devices.
"""

from __future__ import annotations

import os
from typing import Sequence

import chex
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.meta import meta_gradients
from mmjax.meta.maml import LossFn, MetaStep, _check_settings, guarded_meta_step

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

    It initialises when ``force`` is true or ``$JAX_COORDINATOR_ADDRESS`` is set. The
    coordinator ``HOST:PORT``, process count and process id come from the arguments, else
    from ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``; given
    none of the three, JAX's own cluster detection (Cloud TPU pod, SLURM, Open MPI,
    Kubernetes) supplies them, and outside such a cluster it raises ``ValueError``. Given
    some, all three are required. CPU processes use gloo collectives. ``timeout_s`` bounds
    the wait for every peer to connect (then an error, not a hang).
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


def make_pmap_meta_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    inner_lr: float,
    num_steps: int,
    first_order: bool = False,
    remat: bool = False,
    axis_name: str = "devices",
    task_batching: str | int = "auto",
    donate: bool = True,
    skip_nonfinite: bool = False,
):
    """Builds a ``pmap``-ed ``step(params, opt_state, episodes)``.

    ``params`` and ``opt_state`` are replicated (leading device axis, e.g. via
    ``flax.jax_utils.replicate``); every ``episodes`` leaf is ``[devices, tasks_per_device,
    ...]`` (see :func:`shard_for_pmap`). Gradients and metrics are averaged with
    ``lax.pmean``, so every device applies the same update. ``task_batching`` maps each
    device's tasks (see :func:`mmjax.meta.maml.resolve_task_batching`). ``donate`` (the
    inputs ``params``/``opt_state`` are deleted by the call) and ``skip_nonfinite`` (keep
    them when the averaged gradient or loss is not finite; ``metrics["finite"]``): as in
    :func:`mmjax.meta.maml.make_meta_train_step`.
    """
    _check_settings(inner_lr=inner_lr, num_steps=num_steps)
    settings = MetaStep(
        loss_fn, optimizer, inner_lr, num_steps, first_order, remat, task_batching=task_batching
    )

    def step(params, opt_state, episodes):
        grads, metrics = settings.grad(params, episodes)
        grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
        params, opt_state = settings.apply(params, opt_state, grads)
        return params, opt_state, metrics

    if skip_nonfinite:
        step = guarded_meta_step(settings, axis_name)
    return jax.pmap(step, axis_name=axis_name, donate_argnums=(0, 1) if donate else ())


def make_sharded_meta_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    inner_lr: float,
    num_steps: int,
    mesh: Mesh | None = None,
    first_order: bool = False,
    remat: bool = False,
    task_batching: str | int = "vmap",
    donate: bool = True,
    skip_nonfinite: bool = False,
    meta_gradient: str | meta_gradients.MetaGradient = "exact",
):
    """Builds a ``jit`` step whose task batch is sharded over ``mesh`` (axis ``"tasks"``).

    ``params``/``opt_state`` are replicated, ``episodes`` leaves ``[batch, ...]`` are split
    along the batch; XLA inserts the all-reduce of the gradient. Returns
    ``(step, place_episodes, place_replicated)``: the last two put host arrays on the mesh
    with the right sharding (they also work multi-host, every process passing the same
    global arrays). ``task_batching`` defaults to ``"vmap"``: the task axis is the one
    sharded, and a scanned axis cannot be split over devices. ``donate`` (the inputs
    ``params``/``opt_state`` are deleted by the call) and ``skip_nonfinite`` (keep them when
    the gradient or loss is not finite; ``metrics["finite"]``): as in
    :func:`mmjax.meta.maml.make_meta_train_step`. ``meta_gradient``: see
    :func:`mmjax.meta.maml.adapt`; when annealed the step takes the meta-step index as a
    fourth (replicated) argument.
    """
    _check_settings(inner_lr=inner_lr, num_steps=num_steps)
    mesh = task_mesh() if mesh is None else mesh
    annealed = False
    if meta_gradient != "exact":
        meta_gradient = meta_gradients.meta_gradient_spec(meta_gradient, first_order=first_order)
        meta_gradients.check_num_steps(meta_gradient, num_steps)
        annealed = meta_gradient.annealed
    settings = MetaStep(
        loss_fn, optimizer, inner_lr, num_steps, first_order, remat, task_batching=task_batching
    )._replace(meta_gradient=meta_gradient)
    replicated = NamedSharding(mesh, P())
    by_task = NamedSharding(mesh, P(TASK_AXIS))

    jitted = jax.jit(
        guarded_meta_step(settings) if skip_nonfinite else settings.__call__,
        in_shardings=(replicated, replicated, by_task) + ((replicated,) if annealed else ()),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 1) if donate else (),
    )

    def place_episodes(episodes):
        def put(x):
            _check_divisible(x.shape[0], mesh.size)
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, by_task, lambda index: x[index])

        return jax.tree.map(put, episodes)

    def place_replicated(tree):
        return jax.tree.map(
            lambda x: jax.make_array_from_callback(
                np.shape(x), replicated, lambda index: np.asarray(x)[index]
            ),
            tree,
        )

    return jitted, place_episodes, place_replicated
