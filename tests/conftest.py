"""Test configuration: 8 forced host devices, the shared data, a private cache, fast compiles."""

import atexit
import contextlib
import os
import shutil
import tempfile

import pytest

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault(
    "MMJAX_DATA_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")),
)
os.environ.setdefault("MMJAX_CACHE_DIR", tempfile.mkdtemp(prefix="mmjax-test-cache-"))

# Compile time is most of the suite's time on a 2-core CPU, so the tests compile faster:
# - XLA:CPU's legacy loop-fusion emitter instead of the MLIR fusion emitters: the same
#   fusions, the same run time, about 40% less compile time (and eager ops compile faster).
# - `jax_disable_most_optimizations` (LLVM's backend optimisation lowered; the HLO passes,
#   fusion included, still run, so every program computes the same thing): compiles in
#   about half the time again, but the machine code runs ~4x slower. That pays for the tests
#   that run a step or two; the `full_opt` fixture turns it off for a test that trains for
#   longer in this process, `full_opt_env()` for one that trains in a subprocess.
#   MMJAX_TEST_FULL_OPT=1 turns it off everywhere.
# - JAX's persistent compilation cache is shared by the run's processes (both pytest-xdist
#   workers and the subprocesses the CLI, notebook and multi-process tests start): the same
#   program built by another test, or another process, is loaded instead of compiled.
LEGACY_FUSION_FLAG = "--xla_cpu_use_fusion_emitters=false"
FULL_OPT_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "0"}  # for a subprocess that trains long
if LEGACY_FUSION_FLAG not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " " + LEGACY_FUSION_FLAG
if os.environ.get("MMJAX_TEST_FULL_OPT") != "1":
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # Set here in pytest's main process, which the xdist workers inherit it from; removed
    # when that process exits.
    _RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
    _XLA_CACHE = os.path.join(tempfile.gettempdir(), f"mmjax-test-xla-cache-{_RUN_ID}")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@contextlib.contextmanager
def full_optimisation():
    """XLA's full optimisation inside the block, for code that runs many steps (see above)."""
    import jax

    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture
def full_opt():
    """The test compiles with XLA's full optimisation: it trains for many steps."""
    with full_optimisation():
        yield


def full_opt_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's) for a subprocess that trains for many steps."""
    return dict(os.environ if env is None else env, **FULL_OPT_ENV)
