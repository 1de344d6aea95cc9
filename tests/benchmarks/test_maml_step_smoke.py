"""The meta-step benchmark runs end to end at tiny sizes and reports sane figures."""

import importlib.util
import os

import pytest

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "maml_step.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("maml_step", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_reports_speed_memory_and_flops(bench, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    rows = bench.main(["--smoke", "--orders", "second", "--remat", "both", "--json", str(out),
                       "--markdown"])
    assert [(r["order"], r["remat"]) for r in rows] == [("second", False), ("second", True)]
    for row in rows:
        assert row["tasks_per_s"] > 0 and row["compile_s"] > 0 and row["peak_rss_mb"] > 50
        assert row["gflops_per_step"] > 0
        assert row["conv_impl_resolved"] == "im2col"
    assert len(out.read_text().splitlines()) == 2
    table = capsys.readouterr().out
    assert "| order | inner steps | remat |" in table and "| second | 1 | yes |" in table
