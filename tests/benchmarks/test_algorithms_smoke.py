"""Every algorithm learns on real Omniglot in a short run of the real trainer; both benchmark
tables run end to end at smoke sizes."""

import contextlib
import math

import pytest

from mmjax.train import builders
from tests.benchmarks import load_benchmark as _load
from tests.conftest import full_optimisation

ALGORITHMS = ("reptile", "metasgd", "anil", "protonet", "protonet_cosine", "relationnet", "mmaml")
# Measured: these runs take longer than their compile, so XLA's full optimisation pays
# (tests/conftest.py); the others are faster compiled with most optimisations off.
FULL_OPT = ("reptile", "protonet", "protonet_cosine", "relationnet")


@pytest.fixture(scope="module")
def bench():
    return _load("algorithms_table")


@pytest.fixture(scope="module")
def shared_splits():
    """Loads the Omniglot splits once for all runs of this module (same config.data)."""
    real, cache = builders.load_splits, {}

    def cached(config):
        key = config.data.to_json()
        if key not in cache:
            cache[key] = real(config)
        return cache[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builders, "load_splits", cached)
        yield


@pytest.fixture(scope="module")
def rows():
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_short_run_on_real_omniglot_beats_chance(bench, shared_splits, rows, algorithm, tmp_path):
    overrides = bench.SMOKE_OVERRIDES + bench.SMOKE_SETTINGS[algorithm]
    with full_optimisation() if algorithm in FULL_OPT else contextlib.nullcontext():
        row = bench.run_algorithm(algorithm, str(tmp_path), overrides=overrides)
    rows[algorithm] = row
    assert row["algorithm"] == algorithm and row["ways"] == 5 and row["test_episodes"] == 40
    # 5-way chance is 0.2; the 95% CI must sit clearly above it on the unseen test alphabets.
    assert row["test_accuracy"] - row["test_accuracy_ci95"] > 0.3, row
    assert 0 < row["tasks_per_second"] < math.inf


def test_markdown_table_lists_every_run(bench, rows):
    if not rows:  # the runs above were deselected: format a made-up row instead
        rows = {
            "anil": dict(
                algorithm="anil",
                ways=5,
                steps=3,
                test_accuracy=0.5,
                test_accuracy_ci95=0.01,
                tasks_per_second=12.0,
                wall_seconds=4.0,
            )
        }
    table = bench.markdown_table(list(rows.values())).splitlines()
    assert table[0].startswith(
        "| algorithm | ways | steps | test accuracy (%) | meta-train tasks/s"
    )
    assert len(table) == 2 + len(rows)
    for line, row in zip(table[2:], rows.values()):
        assert line.startswith(f"| {row['algorithm']} | 5 | {row['steps']} | ")
        assert f"{100 * row['test_accuracy']:.2f} ± {100 * row['test_accuracy_ci95']:.2f}" in line


def test_regression_table_smoke(capsys):
    results = _load("regression_table").main(["--smoke", "--modes", "2"])
    assert set(results) == {("maml", 2), ("multi_maml", 2), ("mmaml", 2)}
    for r in results.values():
        assert math.isfinite(r["mse"]) and r["mse"] > 0 and r["mse_ci95"] > 0
        assert set(r["per_mode_mse"]) == {"sinusoid", "linear"}
    table = capsys.readouterr().out
    assert "| method | 2 modes MSE |" in table
    for label in ("| MAML |", "| Multi-MAML (oracle mode) |", "| MMAML |"):
        assert label in table
