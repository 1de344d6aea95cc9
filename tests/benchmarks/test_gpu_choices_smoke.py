"""The accelerator-choice grid (benchmarks/gpu_choices.py): its commands, and a tiny run on CPU."""

import json

from tests.benchmarks import load_benchmark


def test_default_grid_is_the_issue_measurement():
    bench = load_benchmark("gpu_choices")
    args = bench._parser().parse_args(["--out", "/tmp/x"])
    points = bench.grid(args)
    assert len(points) == 2 * 2 * 3  # datasets x conv_impl x task_batching
    assert {(p["conv_impl"], p["task_batching"]) for p in points} == {
        (c, t) for c in ("lax", "im2col") for t in ("vmap", "scan", "8")
    }
    assert {p["dataset"] for p in points} == {"omniglot", "miniimagenet"}
    orders = load_benchmark("maml_orders")
    for point in points:  # every command is one maml_orders.py accepts
        argv = bench.maml_orders_args(point, args)
        parsed = orders._parser().parse_args(argv)
        assert parsed.orders == ["second", "first"] and parsed.inner_steps == [1, 5]
        assert (parsed.dataset, parsed.conv_impl, parsed.task_batching) == (
            point["dataset"],
            point["conv_impl"],
            point["task_batching"],
        )


def test_smoke_run_gathers_rows_and_marks_the_fastest(tmp_path):
    bench = load_benchmark("gpu_choices")
    argv = ["--smoke", "--datasets", "omniglot", "--task_batchings", "vmap", "--orders", "first"]
    rows = bench.main(argv + ["--inner_steps", "1", "--out", str(tmp_path)])
    assert [(r["conv_impl"], r["order"], r["inner_steps"]) for r in rows] == [
        ("lax", "first", 1),
        ("im2col", "first", 1),
    ]
    assert [r["conv_impl_resolved"] for r in rows] == ["lax", "im2col"]  # each forced
    assert all(r["device_peak_bytes"] is None and r["tasks_per_s"] > 0 for r in rows)
    lines = (tmp_path / "gpu_choices.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    table = (tmp_path / "gpu_choices.md").read_text()
    fastest = max(rows, key=lambda r: r["tasks_per_s"])
    assert f"| {fastest['conv_impl']} | vmap | **{fastest['tasks_per_s']:.1f}** |" in table
    assert table.count("**") == 2  # one bold entry: one (dataset, order, inner steps) group
    assert "(host RSS)" in table
