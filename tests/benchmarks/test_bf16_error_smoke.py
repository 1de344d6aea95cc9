"""The bfloat16 meta-gradient error benchmark runs end to end at tiny sizes."""

import json

from tests.benchmarks import load_benchmark


def test_smoke_run_writes_rows_and_table(tmp_path):
    bench = load_benchmark("bf16_error")
    rows = bench.main(["--smoke", "--inner_steps", "1", "--out", str(tmp_path)])
    assert [r["inner_steps"] for r in rows] == [1]
    (row,) = rows
    assert row["grad_dtypes_bf16"] == ["float32"]  # gradients of float32 master parameters
    # float32 is far closer to float64 than bfloat16 is (24 vs 8 significand bits).
    assert 0 < row["rel_error_f32_vs_f64"] < 1e-4 < row["rel_error_bf16_vs_f64"] < 1
    # Both columns are rounded (4 significant digits, 3 decimals): they agree to that.
    units = row["bf16_error_in_units_of_2^-8"]
    assert abs(units * 2**-8 - row["rel_error_bf16_vs_f64"]) <= 1e-3 * row["rel_error_bf16_vs_f64"]
    lines = (tmp_path / "bf16_error.jsonl").read_text().splitlines()
    assert [json.loads(line)["inner_steps"] for line in lines] == [1]
    table = (tmp_path / "bf16_error.md").read_text()
    assert 0 < row["inputs_rounded_vs_f64"] < 1
    assert "| inner steps | f32 vs f64 | bf16 vs f64 |" in table and "\n| 1 |" in table
