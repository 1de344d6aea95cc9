"""The representation benchmark runs end to end at toy sizes."""

import json

import pytest

from tests.benchmarks import load_benchmark as load


def test_representation_table_smoke_writes_table_json_and_png(tmp_path):
    # One objective (a VAE, for the PNG) keeps the test short; every objective's training is
    # tested in tests/representation/.
    rows = load("representation_table").main(
        ["--smoke", "--objectives", "vae_poe", "--out", str(tmp_path)]
    )
    assert [r["objective"] for r in rows] == ["vae_poe"]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["accuracy_ci95"] >= 0 and row["episodes"] == 4
        assert 0 <= row["recall_at_1"] <= row["recall_at_5"] <= 1 and row["gallery"] == 60
    assert rows[0]["steps"] == 2 and rows[0]["first_loss"] > 0
    table = (tmp_path / "representation_table.md").read_text()
    assert "| objective | loss (first → last) | 5-way 1-shot ProtoNet (%) |" in table
    assert "| VAE, product of experts |" in table and "meta-test stroke sequences" in table
    assert len(json.loads((tmp_path / "representation_table.json").read_text())["rows"]) == 1
    assert (tmp_path / "vae_reconstructions.png").read_bytes()[:4] == b"\x89PNG"


def test_representation_table_rejects_unknown_objective():
    bench = load("representation_table")
    with pytest.raises(SystemExit):
        bench.parse_args(["--objectives", "none,simclr"])
