"""Shared by the trainer's process-level tests: a tiny CLI run and its uninterrupted reference.

`reference_run` trains once in a subprocess and is reused by the determinism test
(`test_loop.py`: a second process must give the same metrics to the bit) and by the
kill-during-save test (`test_checkpoint.py`: a run killed inside a save and resumed must end
exactly where the reference does).
"""

import os
import subprocess
import sys

import pytest

# Small enough to compile and run in seconds; a checkpoint at every step, all kept, so a
# checkpoint of an interrupted run can be compared with the reference's at the same step.
TINY_RUN = [
    "model.features=4",
    "maml.first_order=True",
    "meta_batch_size=2",
    "queries=1",
    "num_steps=6",
    "checkpoint_every=1",
    "keep_checkpoints=10",
    "log_every=1",
    "eval_every=1000",
    "val_episodes=2",
    "test_episodes=4",
    "eval_batch_size=2",
]


def tiny_run_args(workdir, *extra) -> list[str]:
    """``mmjax train`` arguments of the tiny run (without the interpreter)."""
    args = ["train", "--config", "quick", "--no_progress", "--workdir", str(workdir)]
    for item in TINY_RUN + list(extra):
        args += ["--set", item]
    return args


def run_env(compilation_cache=None) -> dict:
    """The test environment, with JAX's persistent compilation cache in ``compilation_cache``.

    With ``None`` the subprocess compiles everything itself (what the determinism test
    needs); with a folder, a later process reuses the executables (same HLO, same code) and
    starts in a fraction of the time.
    """
    env = dict(os.environ)
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE"):
        env.pop(name, None)
    if compilation_cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def run_cli(workdir, *extra, compilation_cache=None, check=True) -> subprocess.CompletedProcess:
    """Runs the tiny ``mmjax train`` in a fresh Python process."""
    process = subprocess.run(
        [sys.executable, "-m", "mmjax.cli"] + tiny_run_args(workdir, *extra),
        env=run_env(compilation_cache),
        capture_output=True,
        text=True,
    )
    if check:
        assert process.returncode == 0, process.stdout + process.stderr
    return process


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax-compilation-cache")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, compilation_cache):
    """Workdir of an uninterrupted tiny run (compiled from scratch; it fills the cache)."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    run_cli(workdir, compilation_cache=compilation_cache)
    return workdir
