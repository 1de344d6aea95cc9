"""The representation benchmark runs end to end at toy sizes."""

import json

import numpy as np
import pytest

from tests.benchmarks import load_benchmark as load


def test_representation_table_smoke_writes_table_json_and_png(tmp_path):
    # One objective (a VAE, for the PNG) keeps the test short; every objective's training is
    # tested in tests/representation/.
    rows = load("representation_table").main(
        ["--smoke", "--objectives", "vae_poe", "--out", str(tmp_path)]
    )
    assert [r["objective"] for r in rows] == ["vae_poe"]
    # Smoke sizes learn nothing, so the figures are checked for what they must be whatever the
    # weights: counts over the episodes' queries and the gallery, and the table shows them.
    queries = 4 * 5 * 5  # episodes x ways x queries per class
    # float32 per-episode means k / 25, summed over 4: far below 1e-4 of a query count.
    count_tol = 1e-4
    for row in rows:
        assert row["episodes"] == 4 and row["gallery"] == 60
        correct = row["accuracy"] * queries
        assert abs(correct - round(correct)) < count_tol and 0 <= round(correct) <= queries, row
        hits_1, hits_5 = row["recall_at_1"] * 60, row["recall_at_5"] * 60
        assert abs(hits_1 - round(hits_1)) < count_tol and abs(hits_5 - round(hits_5)) < count_tol
        assert 0 <= round(hits_1) <= round(hits_5) <= 60, row  # R@1 <= R@5: nested cut-offs
    assert rows[0]["steps"] == 2 and np.isfinite(rows[0]["first_loss"])
    table = (tmp_path / "representation_table.md").read_text()
    row = rows[0]
    assert f"{100 * row['accuracy']:.2f} ± {100 * row['accuracy_ci95']:.2f}" in table
    assert "| objective | loss (first → last) | 5-way 1-shot ProtoNet (%) |" in table
    assert "| VAE, product of experts |" in table and "meta-test stroke sequences" in table
    assert len(json.loads((tmp_path / "representation_table.json").read_text())["rows"]) == 1
    assert (tmp_path / "vae_reconstructions.png").read_bytes()[:4] == b"\x89PNG"


def test_representation_table_rejects_unknown_objective():
    bench = load("representation_table")
    with pytest.raises(SystemExit):
        bench.parse_args(["--objectives", "none,simclr"])
