"""The fusion benchmark and the Lake et al. runs CLI run end to end at toy sizes."""

import importlib.util
import json
import os

import numpy as np
import pytest

from mmjax import configs
from mmjax.train import loop

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    for row in rows:
        assert row["ways"] == 5 and 0 <= row["accuracy"] <= 1 and row["accuracy_ci95"] >= 0
    table = (tmp_path / "fusion_table.md").read_text()
    assert "| model | modality dropout | 5-way 1-shot (%) |" in table
    assert "| late | 0 | " in table and "| image only | 0 | " in table
    assert len(json.loads((tmp_path / "fusion_table.json").read_text())) == 2
    assert (tmp_path / "fusion_table.png").read_bytes()[:4] == b"\x89PNG"


def test_fusion_table_rejects_unknown_method():
    bench = load("fusion_table")
    for bad in (["--methods", "concat,sum"], ["--baselines", "audio_only"], ["--dropout", "0.7"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


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
    assert np.all((result["error_per_run"] >= 0) & (result["error_per_run"] <= 1))
    assert result["multimodal"] is False and result["step"] == 1
    assert "People (Lake et al. 2015) | 4.5 |" in out.read_text()
    assert json.loads((tmp_path / "lake.json").read_text())["num_runs"] == 20
