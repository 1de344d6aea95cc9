"""The second- vs first-order MAML benchmark runs end to end at tiny sizes."""

import json
import math
import resource

import numpy as np
import pytest

from tests.benchmarks import load_benchmark

KEYS = {
    "order",
    "ways",
    "shots",
    "queries",
    "meta_batch",
    "inner_steps",
    "remat",
    "tasks_per_s",
    "s_per_step",
    "compile_s",
    "peak_memory_mb",
    "gflop_per_step",
    "peak_fraction",
}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("maml_orders")


def test_smoke_run_writes_jsonl_markdown_and_plots(bench, tmp_path):
    rows = bench.main(["--smoke", "--out", str(tmp_path)])
    assert [(r["order"], r["inner_steps"], r["remat"]) for r in rows] == [
        ("second", 1, False),
        ("first", 1, False),
    ]
    lines = (tmp_path / "maml_orders.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    for row in rows:
        assert KEYS <= set(row)
        assert (row["ways"], row["shots"], row["queries"], row["meta_batch"]) == (5, 1, 2, 2)
        assert row["tasks_per_s"] == pytest.approx(2 / row["s_per_step"], rel=1e-2)
        # Timings on a shared CPU bound nothing; check the derived columns are derived right:
        # achieved GFLOP/s = GFLOP per step / s per step, peak fraction = achieved / matmul peak
        # (rounding: s_per_step to 5 digits, achieved_gflop_s to 0.01, peak_fraction to 1e-4).
        assert all(np.isfinite(row[k]) for k in ("compile_s", "peak_memory_mb", "s_per_step"))
        achieved, peak = row["achieved_gflop_s"], row["matmul_peak_gflop_s"]
        derived = row["gflop_per_step"] / row["s_per_step"]  # gflop_per_step to 1e-6
        assert achieved == pytest.approx(derived, rel=1e-4, abs=0.005 + 5e-7 / row["s_per_step"])
        assert row["peak_fraction"] == pytest.approx(achieved / peak, abs=5e-5 + 0.005 / peak)
        # --smoke measures in this process: its peak RSS so far bounds the reading from above.
        assert row["memory_source"] == "host peak RSS"
        # (the row rounds it to 0.1 MB, so up to 0.05 MB above the unrounded reading)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert row["peak_memory_mb"] <= peak_rss_mb + 0.05
        assert row["device_peak_bytes"] is None  # CPU: memory_stats() reports nothing
    second, first = rows
    # The second-order step differentiates through the inner gradient: more FLOPs.
    assert second["gflop_per_step"] > first["gflop_per_step"] > 0
    table = (tmp_path / "maml_orders.md").read_text()
    assert "| order | inner steps | remat |" in table and "| second | 1 | no |" in table
    for name in ("time_vs_inner_steps.png", "memory_vs_inner_steps.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scanned_tasks_are_timed_and_every_task_counted(bench, tmp_path):
    """--task_batching scan times the scanned step; its FLOPs still count all tasks."""
    vmapped = bench.main(
        ["--smoke", "--orders", "first", "--task_batching", "vmap", "--out", str(tmp_path / "vmap")]
    )
    scanned = bench.main(
        ["--smoke", "--orders", "first", "--task_batching", "scan", "--out", str(tmp_path / "scan")]
    )
    assert vmapped[0]["task_batching_resolved"] == "vmap"
    assert scanned[0]["task_batching_resolved"] == "scan"
    assert scanned[0]["gflop_per_step"] == pytest.approx(vmapped[0]["gflop_per_step"], rel=1e-6)
    assert "tasks by scan" in (tmp_path / "scan" / "maml_orders.md").read_text()
    message = "--task_batching must be auto, vmap, scan or an int >= 1; got 'loop'"
    with pytest.raises(ValueError, match=message):
        bench.main(["--smoke", "--task_batching", "loop", "--out", str(tmp_path / "bad")])


def test_flop_count_grows_with_inner_steps(bench):
    """cost_analysis of the unrolled inner loop counts every step (a rolled scan would not)."""
    spec = dict(
        order="first",
        remat=False,
        ways=2,
        shots=1,
        queries=1,
        meta_batch=1,
        features=4,
        num_blocks=1,
        image_size=8,
        conv_impl="auto",
    )
    import jax

    from mmjax.meta import make_step, maml

    def count(steps, unroll):
        model, episodes, params, optimizer, opt_state = bench._build(spec)
        learner = maml.maml_learner(
            model, inner_lr=0.1, num_inner_steps=steps, first_order=True, unroll=unroll
        )
        step = make_step(learner, optimizer, jit=False)
        return jax.jit(step).lower(params, opt_state, episodes).cost_analysis()["flops"]

    flops = [count(steps, unroll=True) for steps in (1, 2, 3)]
    per_step = flops[1] - flops[0]
    assert per_step > 0.1 * flops[0]
    assert flops[2] - flops[1] == pytest.approx(per_step, rel=1e-2)
    # The rolled loop's body is counted once: the count does not grow with inner steps.
    assert count(3, unroll=1) < flops[0] + 0.5 * per_step


def test_bad_arguments_raise(bench, tmp_path):
    with pytest.raises(ValueError, match="--meta_batch"):
        bench.main(["--smoke", "--out", str(tmp_path), "--meta_batch", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path), "--remat", "maybe"])


def test_miniimagenet_shapes_and_resnet12_run(bench, tmp_path, monkeypatch):
    """--dataset miniimagenet: RGB, max-pool, lr 0.01; --backbone resnet12; l2l flags follow."""
    (row,) = bench.main(
        ["--smoke", "--dataset", "miniimagenet", "--orders", "first", "--out", str(tmp_path)]
    )
    assert (row["dataset"], row["channels"], row["pool"], row["inner_lr"]) == (
        "miniimagenet", 3, "max", 0.01
    )  # fmt: skip
    assert row["tasks_per_s"] > 0 and row["compile_s"] > 0 and row["gflop_per_step"] > 0
    # ResNet-12 rows build a ResNet-12 on RGB episodes (timing it is the conv4 path above).
    spec = dict(row, backbone="resnet12", widths=[4, 4])
    model, episodes, params, _, _ = bench._build(spec)
    assert type(model.encoder).__name__ == "ResNet12"
    assert episodes.support_inputs.shape == (2, 5, 14, 14, 3)
    assert model.apply(params, episodes.query_inputs[0]).shape == (10, 5)
    calls = []

    class Done:
        returncode, stdout, stderr = 0, '{"step_s": 1.0}\n', ""

    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    bench._run_l2l("python", dict(spec, threads=0))
    flags = " ".join(calls[0])
    assert "--dataset miniimagenet" in flags and "--backbone resnet12" in flags
    assert "--inner_lr 0.01" in flags and "--image_size 14" in flags


def test_meta_gradient_modes_get_rows_and_a_gradient_quality_table(bench, tmp_path):
    """truncated / implicit rows are timed; gradient quality compares each with exact."""
    rows = bench.main(["--smoke", "--orders", "truncated", "implicit", "--gradient_quality",
                       "--quality_inner_steps", "2", "--out", str(tmp_path)])  # fmt: skip
    assert [r["order"] for r in rows] == ["truncated", "implicit"]
    assert rows[1]["lam"] == 1.0 and rows[1]["cg_steps"] == 20 and rows[0]["truncate"] == 1
    lines = (tmp_path / "gradient_quality.jsonl").read_text().splitlines()
    quality = {(q["stage"], q["mode"], q["inner_steps"]): q for q in map(json.loads, lines)}
    assert set(quality) == {
        (stage, mode, steps)
        for stage in ("init", "trained")
        for mode in ("truncated", "implicit")
        for steps in (2,)
    }
    for stage in ("init", "trained"):
        # k = 1 of 2 steps drops the first step's curvature: not exact, but close.
        assert 1e-3 < quality[(stage, "truncated", 2)]["rel_l2_error"] < 1
        implicit = quality[(stage, "implicit", 2)]
        for q in (quality[(stage, "truncated", 2)], implicit):
            # |g - e| >= |e| sin(angle(g, e)): the error column is consistent with the cosine
            # column (both rounded: 6 decimals, 4 significant digits).
            assert q["rel_l2_error"] >= math.sqrt(max(0.0, 1 - q["cosine"] ** 2)) - 1e-3, q
            assert 0.9 < q["cosine"] < 1 - 1e-6, q  # close to exact, not exact (measured ~0.995)
        # The implicit rule against the unrolled proximal meta-gradient: not converged at 2
        # inner steps, so not equal (measured 0.06), but a wrong CG solve or HVP is O(1) off.
        assert 1e-4 < implicit["implicit_vs_unrolled_rel_error"] < 0.5, implicit
    assert rows[0]["gradient_quality"] and rows[0]["gradient_quality"][0]["mode"] == "truncated"
    assert (
        "| init | 2 | implicit (lam=1.0, cg=20) |" in (tmp_path / "gradient_quality.md").read_text()
    )
    for name in ("gradient_error_vs_inner_steps.png", "time_vs_inner_steps.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_python(path, script: str):
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def _fake_measure(spec: dict) -> dict:
    """A measured row without compiling anything (the plumbing under test is after it)."""
    keys = ("order", "inner_steps", "remat", "ways", "shots", "queries", "meta_batch")
    return dict(
        {k: spec[k] for k in keys}, tasks_per_s=8.0, s_per_step=0.25, compile_s=1.0,
        peak_memory_mb=100.0, xla_temp_mb=None, gflop_per_step=1.0, peak_fraction=0.01,
        backend="cpu", device="cpu", jax="0", conv_impl_resolved="c", task_batching_resolved="vmap",
        memory_source="host peak RSS",
    )  # fmt: skip


def test_implicit_rows_are_timed_against_torchopt(bench, tmp_path, monkeypatch):
    """--torchopt_python: the implicit row gets TorchOpt's tasks/s and ratio, named as such."""
    monkeypatch.setitem(bench._CHILD_TASKS, "measure", _fake_measure)
    monkeypatch.setitem(bench._CHILD_TASKS, "peak", lambda spec: {"matmul_peak_gflop_s": 100.0})
    calls = tmp_path / "calls.txt"
    reference = (
        '{"framework": "torchopt", "torchopt": "0.7.3", "learn2learn": "0.2.0", '
        '"torch": "2.14.1", "threads": 3, "step_s": 0.5, "tasks_per_s": 4.0, "peak_rss_mb": 321.0}'
    )
    python = _fake_python(
        tmp_path / "python",
        f'echo "$@" >> {calls}\nif [ "$1" = "-c" ]; then exit 0; fi\necho \'{reference}\'\n',
    )
    rows = bench.main(["--smoke", "--l2l", "auto", "--orders", "first", "implicit", "--lam", "2",
                       "--torchopt_python", python, "--out", str(tmp_path / "out")])  # fmt: skip
    first, implicit = rows
    assert "l2l_tasks_per_s" not in first and "reference" not in first  # no learn2learn here
    assert implicit["reference"] == "torchopt"
    assert implicit["l2l_tasks_per_s"] == 4.0  # meta-batch 2 / 0.5 s
    assert implicit["l2l_peak_memory_mb"] == 321.0 and implicit["l2l_threads"] == 3
    assert implicit["speedup_vs_l2l"] == 2.0  # 0.5 s TorchOpt / 0.25 s mmjax
    assert implicit["l2l_versions"] == "learn2learn 0.2.0, torch 2.14.1, torchopt 0.7.3"
    runs = [c for c in calls.read_text().splitlines() if not c.startswith("-c")]
    assert len(runs) == 1 and runs[0].split()[0].endswith("benchmarks/torchopt_reference.py")
    assert "--lam 2.0 --cg_steps 20" in runs[0] and "--inner_steps 1" in runs[0]
    table = (tmp_path / "out" / "maml_orders.md").read_text()
    assert "| reference | reference tasks/s | speed-up |" in table
    assert "| TorchOpt | 4.0 | 2.00x |" in table
    assert "| first | 1 | no |" in table and table.count("| - | - | - |") == 1
    assert "implicit rows against TorchOpt's iMAML" in table


def test_torchopt_python_without_torchopt_is_refused(bench, tmp_path):
    python = _fake_python(tmp_path / "python", "exit 1\n")
    message = f"--torchopt_python {python}: torch, learn2learn and torchopt must import"
    with pytest.raises(ValueError, match=message):
        bench.main(["--smoke", "--l2l", "auto", "--orders", "implicit", "--torchopt_python",
                    python, "--out", str(tmp_path / "out")])  # fmt: skip
