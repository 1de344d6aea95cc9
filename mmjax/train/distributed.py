"""Multi-host plumbing of the trainer: start-up, who writes, one agreed stop, one shared workdir.

Every process runs the same program over the global mesh (``parallel="sharded"``). Only
process 0 writes logs, TensorBoard, ``config.json``, ``results.json`` and plots; orbax
checkpoint saves are collective. Checks at start-up go through the coordination service's
key-value store with timeouts, so a missing or mismatched peer is an error, never a hang.
With one process every function here is a no-op (or the identity).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import storage
from mmjax.meta.parallel import initialize_distributed, task_mesh

# Seconds a process waits for its peers: at connection, and at each start-up check.
STARTUP_TIMEOUT_S = 120
# A process that has not sent a heartbeat for this long is considered dead (all then exit).
HEARTBEAT_TIMEOUT_S = 60
# At exit a process waits at most this long for the others to exit too.
SHUTDOWN_TIMEOUT_S = 60
MARKER_NAME = ".mmjax-shared-workdir"

# Signal (name) received outside the training loop's own handler, see `initialize`.
_received: dict[str, str] = {}


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = STARTUP_TIMEOUT_S,
) -> int:
    """Starts a multi-host run: `mmjax.meta.parallel.initialize_distributed`, then signals.

    From here on a SIGTERM/SIGINT is recorded, not fatal, so that the trainer stops every
    process together at one step (`agree_to_stop`) whenever it comes; a second one outside
    the training loop kills the process as usual.

    Args:
      coordinator: ``HOST:PORT`` of process 0 (default ``$JAX_COORDINATOR_ADDRESS``).
      num_processes: number of processes (default ``$JAX_NUM_PROCESSES``).
      process_id: this process's index (default ``$JAX_PROCESS_ID``).
      timeout_s: seconds to wait for every peer to connect before failing.

    Returns:
      The number of processes.
    """
    initialize_distributed(
        True,
        coordinator=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        timeout_s=timeout_s,
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _record_signal)
    return jax.process_count()


def _record_signal(signum, frame) -> None:
    if "signal" in _received:  # a second one (e.g. Ctrl-C twice): die as without a handler
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    _received["signal"] = signal.Signals(signum).name


def finish() -> None:
    """Ignores SIGTERM from here on: the run is over (checkpoint saved) and the process exits.

    Python resets its own handlers while the interpreter shuts down, so a late SIGTERM (one
    host told to stop after all have stopped together) would otherwise kill a process that
    is only waiting for its peers at exit (at most `SHUTDOWN_TIMEOUT_S`).
    """
    if jax.process_count() > 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def is_writer() -> bool:
    """Whether this process writes the run's files (logs, plots, results): process 0 only."""
    return jax.process_index() == 0


def check_config(config) -> None:
    """Raises ``ValueError`` when a multi-process run's config cannot be run over all hosts."""
    if jax.process_count() > 1 and config.parallel != "sharded":
        raise ValueError(
            f"config.parallel={config.parallel!r} with {jax.process_count()} processes would "
            "train one model per process: set --set parallel=sharded for a multi-host run"
        )


def _client():
    return jax._src.distributed.global_state.client  # the coordination service (orbax uses it)


def _gather_strings(name: str, value: str, timeout_s: float) -> list[str]:
    """Every process's ``value`` under key ``name``, in process order (waits ``timeout_s``)."""
    client = _client()
    client.key_value_set(f"mmjax/{name}/{jax.process_index()}", value)
    values = []
    for index in range(jax.process_count()):
        try:
            values.append(
                client.blocking_key_value_get(f"mmjax/{name}/{index}", int(timeout_s * 1000))
            )
        except jax.errors.JaxRuntimeError as error:  # the coordination service's deadline
            raise TimeoutError(
                f"process {jax.process_index()} waited {timeout_s:.0f} s for process {index} "
                f"at the start-up check {name!r}: is it running the same command? ({error})"
            ) from None
    return values


def check_shared_workdir(workdir: str, *, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Checks that every process sees the same ``workdir`` (one shared folder), or raises.

    Process 0 writes a random token into ``<workdir>/.mmjax-shared-workdir``; every process
    reads it back and all compare results, so all raise ``ValueError`` together (none is
    left waiting in a collective) when one of them sees another folder.
    """
    if jax.process_count() == 1:
        return
    token = secrets.token_hex(16)
    path = storage.join(workdir, MARKER_NAME)
    if is_writer():
        storage.write_text(path, token)
    token = _gather_strings("workdir-token", token, timeout_s)[0]
    try:
        seen = storage.read_text(path)
    except OSError:
        seen = ""
    where = os.path.abspath(workdir) if storage.is_local(workdir) else workdir
    status = "ok" if seen == token else where
    statuses = _gather_strings("workdir-seen", status, timeout_s)
    wrong = [(index, s) for index, s in enumerate(statuses) if s != "ok"]
    if wrong:
        listed = "; ".join(f"process {index} at {s}" for index, s in wrong)
        raise ValueError(
            f"--workdir must be one directory shared by all {jax.process_count()} processes "
            f"(e.g. on NFS / GCS fuse): process 0's marker {MARKER_NAME} is not seen by {listed}"
        )


def to_global(tree: Any) -> Any:
    """Puts host arrays, equal on every process, on the global mesh, replicated (no-op alone)."""
    if jax.process_count() == 1:
        return tree
    replicated = NamedSharding(task_mesh(), P())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, replicated, lambda index: x[index])

    return jax.tree.map(put, tree)


def agree_to_stop(local_signal: str | None) -> str | None:
    """The stop request agreed by all processes: a signal name when any process got one.

    Call it at the same point of every step on every process (it is a tiny all-gather of
    one int, a collective): all then stop, and save, at the same step. Alone it returns
    ``local_signal``.
    """
    if jax.process_count() == 1:
        return local_signal
    local_signal = local_signal or _received.get("signal")
    code = signal.Signals[local_signal].value if local_signal else 0
    codes = multihost_utils.process_allgather(np.int32(code))
    first = int(np.max(codes))
    return signal.Signals(first).name if first else None


def measure_stop_agreement(repeats: int = 50) -> float:
    """Mean seconds of one `agree_to_stop` (for the docs; call on every process)."""
    agree_to_stop(None)
    start = time.perf_counter()
    for _ in range(repeats):
        agree_to_stop(None)
    return (time.perf_counter() - start) / repeats


class NullWriter:
    """The metrics sink of a process that does not write (see `is_writer`): drops everything."""

    def write(self, step: int, split: str, metrics: dict) -> None:
        """Drops the record."""

    def close(self) -> None:
        """Does nothing."""
