"""The suite's compile settings (tests/conftest.py) are in force and can be undone per test."""

import os
import subprocess
import sys

import jax

from tests.conftest import LEGACY_FUSION_FLAG, full_opt_env, full_optimisation


def test_compile_settings_are_in_force():
    assert LEGACY_FUSION_FLAG in os.environ["XLA_FLAGS"]
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    expected = os.environ.get("MMJAX_TEST_FULL_OPT") != "1"
    assert jax.config.values["jax_disable_most_optimizations"] is expected


def test_full_optimisation_turns_the_flag_off_and_restores_it():
    before = jax.config.values["jax_disable_most_optimizations"]
    with full_optimisation():
        assert jax.config.values["jax_disable_most_optimizations"] is False
    assert jax.config.values["jax_disable_most_optimizations"] is before


def test_full_opt_env_reaches_a_subprocess():
    code = "import jax; print(jax.config.values['jax_disable_most_optimizations'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=full_opt_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
