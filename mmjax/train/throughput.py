"""Throughput and memory of a training run, as the trainer's logs and the benchmarks report them.

Memory: the device's ``peak_bytes_in_use`` (`jax.Device.memory_stats`, the largest over the
process's local devices) where the backend reports it (GPU, TPU); on CPU, where
``memory_stats()`` is None, the process's peak resident set size (``getrusage``), labelled as
the host's, since then the arrays live in host memory.
"""

from __future__ import annotations

import platform
import resource
import sys

import jax


def device_peak_bytes() -> int | None:
    """Peak bytes in use on this process's devices (max over them), or None on CPU."""
    if jax.default_backend() == "cpu":
        return None
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def host_peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (``ru_maxrss``: KiB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def memory_fields() -> dict[str, int]:
    """``{"device_peak_bytes": ...}`` where the backend reports it, else ``{"host_peak_rss_bytes": ...}``."""
    device = device_peak_bytes()
    if device is not None:
        return {"device_peak_bytes": device}
    return {"host_peak_rss_bytes": host_peak_rss_bytes()}


def tasks_per_second(meta_batch_size: int, steps: int, seconds: float) -> float:
    """``meta_batch_size * steps / seconds``: meta-training tasks per second of stepping.

    Raises:
      ValueError: ``seconds`` is not > 0 or ``steps`` < 1.
    """
    if not seconds > 0 or steps < 1:
        raise ValueError(f"need seconds > 0 and steps >= 1; got seconds={seconds}, steps={steps}")
    return meta_batch_size * steps / seconds


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f}GiB"


def progress_postfix(record: dict) -> dict[str, str]:
    """The trainer's progress-bar fields of a logged ``train`` record.

    ``tasks/s`` to one decimal, and ``dev_mem`` (device peak) or ``host_rss`` (CPU: process
    peak RSS) in GiB to two decimals.
    """
    postfix = {
        "loss": f"{record['loss']:.3f}",
        "acc": f"{record['accuracy']:.3f}",
        "tasks/s": f"{record['tasks_per_second']:.1f}",
    }
    if "device_peak_bytes" in record:
        postfix["dev_mem"] = _gib(record["device_peak_bytes"])
    elif "host_peak_rss_bytes" in record:
        postfix["host_rss"] = _gib(record["host_peak_rss_bytes"])
    return postfix


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
