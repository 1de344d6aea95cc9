"""The fusion benchmark and the Lake et al. runs CLI run end to end at toy sizes."""

import json

import numpy as np
import pytest

from mmjax import configs
from mmjax.train import loop
from tests.benchmarks import load_benchmark as load


def test_variants_cover_baselines_and_each_method_with_and_without_dropout():
    rows = load("fusion_table").variants(["concat", "film"], 0.25)
    assert [(r["name"], r["fusion"], r["dropout"], r["train"]) for r in rows] == [
        ("image only", "concat", 0.0, "image_only"),
        ("strokes only", "concat", 0.0, "strokes_only"),
        ("concat", "concat", 0.0, "both"),
        ("concat", "concat", 0.25, "both"),
        ("film", "film", 0.0, "both"),
        ("film", "film", 0.25, "both"),
    ]


def test_fusion_table_smoke_writes_table_chart_and_json(tmp_path):
    # Two runs keep the test short: a baseline (tested under its own condition) and one
    # fusion method; the variant list is checked above, dropout training in
    # tests/train/test_multimodal_train.py.
    rows = load("fusion_table").main(
        [
            "--smoke",
            "--methods",
            "late",
            "--baselines",
            "image_only",
            "--dropout",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    assert [(r["name"], r["dropout"], r["train"]) for r in rows] == [
        ("image only", 0.0, "image_only"),
        ("late", 0.0, "both"),
    ]
    table = (tmp_path / "fusion_table.md").read_text()
    # Smoke sizes learn nothing: check what must hold whatever the weights. 4 test episodes of
    # 5 ways x 1 query: the accuracy counts correct queries out of 20 (float32 per-episode
    # means k / 5: off an integer count by far less than 1e-4), and the table shows it.
    queries = 4 * 5 * 1
    for row in rows:
        assert row["ways"] == 5
        correct = row["accuracy"] * queries
        assert abs(correct - round(correct)) < 1e-4 and 0 <= round(correct) <= queries, row
        assert np.isfinite(row["accuracy_ci95"])
        cell = f"{100 * row['accuracy']:.2f} ± {100 * row['accuracy_ci95']:.2f}"
        assert f"| {'image only' if row['train'] == 'image_only' else 'late'} | 0 | {cell}" in table
    assert "| model | modality dropout | 5-way 1-shot (%) |" in table
    assert "| late | 0 | " in table and "| image only | 0 | " in table
    assert len(json.loads((tmp_path / "fusion_table.json").read_text())) == 2
    assert (tmp_path / "fusion_table.png").read_bytes()[:4] == b"\x89PNG"


def test_fusion_table_rejects_unknown_method():
    bench = load("fusion_table")
    for bad in (["--methods", "concat,sum"], ["--baselines", "audio_only"], ["--dropout", "0.7"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_set_ways_applies_to_one_number_of_ways_and_is_checked():
    bench = load("fusion_table")
    args = bench.parse_args(
        ["--ways", "5,20", "--set_ways", "20:meta_batch_size=2", "--set_ways", "5:queries=3"]
    )
    assert args.ways_overrides == {20: ["meta_batch_size=2"], 5: ["queries=3"]}
    for bad in (["--set_ways", "meta_batch_size=2"], ["--ways", "5", "--set_ways", "20:queries=1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_finished_rows_are_reused_and_an_interrupted_run_stops_the_table(tmp_path, monkeypatch):
    bench = load("fusion_table")
    calls = []

    def fake_train(config, workdir, progress):
        calls.append((config.model.fusion, config.meta_batch_size))
        return {"test_accuracy": 0.5, "test_accuracy_ci95": 0.01}

    monkeypatch.setattr(bench.loop, "train", fake_train)
    argv = ["--ways", "5", "--methods", "late", "--baselines", "none", "--dropout", "0"]
    argv += ["--out", str(tmp_path)]
    first = bench.main(argv + ["--set_ways", "5:meta_batch_size=3"])
    assert calls == [("late", 3)] and first[0]["accuracy"] == 0.5
    assert bench.main(argv + ["--set_ways", "5:meta_batch_size=3"]) == first
    assert len(calls) == 1  # same overrides: the stored row is reused
    bench.main(argv + ["--set_ways", "5:meta_batch_size=4"])
    assert calls[-1] == ("late", 4)  # other overrides: trained again

    monkeypatch.setattr(bench.loop, "train", lambda *a, **k: {"interrupted": 15, "step": 7})
    with pytest.raises(SystemExit, match="interrupted by signal 15"):
        bench.main(argv + ["--set_ways", "5:meta_batch_size=5"])


def test_lake_runs_cli_scores_a_20_way_workdir(tmp_path):
    workdir = tmp_path / "run20"
    config = configs.apply_overrides(
        configs.get_config("omniglot_maml_20w1s"),
        [
            "model.features=4",
            "maml.first_order=True",
            "maml.num_inner_steps=1",
            "maml.eval_num_inner_steps=1",
            "meta_batch_size=1",
            "queries=1",
            "num_steps=1",
            "test_episodes=2",
            "val_episodes=2",
            "eval_batch_size=2",
        ],
    )
    loop.train(config, workdir, progress=False)
    out = tmp_path / "lake.md"
    result = load("lake_runs").main(["--workdir", str(workdir), "--out", str(out)])
    assert result["num_runs"] == 20 and result["error_per_run"].shape == (20,)
    # Each run classifies 20 test drawings: its error counts mistakes out of 20.
    mistakes = result["error_per_run"] * 20
    np.testing.assert_allclose(mistakes, np.round(mistakes), atol=1e-4)
    assert np.all((np.round(mistakes) >= 0) & (np.round(mistakes) <= 20))
    # The mean and 95% half-width over the 20 runs, computed here from the per-run errors.
    errors = np.asarray(result["error_per_run"], np.float64)
    half_width = 1.959963984540054 * errors.std(ddof=1) / np.sqrt(errors.size)
    expected = [errors.mean(), half_width]
    np.testing.assert_allclose([result["mean_error"], result["error_ci95"]], expected)
    assert result["multimodal"] is False and result["step"] == 1
    assert "People (Lake et al. 2015) | 4.5 |" in out.read_text()
    assert json.loads((tmp_path / "lake.json").read_text())["num_runs"] == 20
