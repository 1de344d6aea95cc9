"""The kernel-gradient layout benchmark runs and both forms compute the same product."""

import jax
import jax.numpy as jnp
import pytest

from tests.benchmarks import load_benchmark


def test_smoke_rows_and_forms_agree(capsys):
    bench = load_benchmark("kernel_grad_layout")
    rows = bench.main(["--smoke"])
    assert [(r["pixels"], r["depth"]) for r in rows] == [(40, 72), (40, 9)]
    for r in rows:
        assert r["plain_min_ms"] > 0 and r["barrier_min_ms"] > 0
        assert r["barrier_speedup"] == pytest.approx(
            r["plain_min_ms"] / r["barrier_min_ms"], rel=1e-2
        )
    assert "| 40 | 72 |" in capsys.readouterr().out
    p, g = (
        jax.random.normal(jax.random.key(0), (40, 72)),
        jax.random.normal(jax.random.key(1), (40, 8)),
    )
    for form in (bench.plain_form, bench.barrier_form):  # the two forms the script times
        assert jnp.allclose(jax.jit(form)(p, g), p.T @ g, rtol=1e-5, atol=1e-5)


def test_bad_repeats_is_refused():
    bench = load_benchmark("kernel_grad_layout")
    with pytest.raises(ValueError, match="--repeats"):
        bench.main(["--repeats", "0"])
