"""The notebooks run as written: papermill executes each in smoke mode and checks its numbers.

Each notebook takes the papermill parameters ``SMOKE`` and ``RESULTS_PATH`` (its first code
cell, tagged ``parameters``) and writes its key numbers to ``RESULTS_PATH`` as JSON; the
assertions are on those numbers. The kernel is this interpreter (a kernel spec written into a
temporary ``JUPYTER_PATH``), so a fresh virtual environment with only ``pip install -e
".[test]"`` runs them without any global Jupyter set-up.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from typing import Iterator

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
papermill = pytest.importorskip("papermill")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
NAMES = (
    "01_quickstart",
    "02_multimodal_fusion",
    "03_second_vs_first_order",
    "04_multi_device",
)
KERNEL = "mmjax-test-python"


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory) -> Iterator[str]:
    """A kernel spec running ``sys.executable``, found through a private ``JUPYTER_PATH``."""
    pytest.importorskip("ipykernel")
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_dir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mmjax tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(jupyter_dir)] + ([old] if old else []))
    yield KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def execute(name: str, tmp_path, kernel_name: str, **parameters) -> tuple[dict, dict]:
    """Runs ``notebooks/<name>.ipynb`` in smoke mode; returns (results JSON, executed notebook)."""
    results_path = tmp_path / f"{name}.json"
    out = tmp_path / f"{name}.out.ipynb"
    # The kernel inherits this environment (XLA_FLAGS, MMJAX_CACHE_DIR from conftest) and runs
    # in the repository root: pass the data folder as an absolute path.
    os.environ["MMJAX_DATA_DIR"] = os.path.abspath(os.environ["MMJAX_DATA_DIR"])
    papermill.execute_notebook(
        os.path.join(NOTEBOOKS, f"{name}.ipynb"),
        str(out),
        parameters=dict(SMOKE=True, RESULTS_PATH=str(results_path), **parameters),
        kernel_name=kernel_name,
        cwd=ROOT,
        progress_bar=False,
        execution_timeout=600,
    )
    with open(results_path) as f:
        results = json.load(f)
    return results, nbformat.read(str(out), as_version=4)


def count_images(notebook) -> int:
    """Number of PNG figures the executed notebook displayed."""
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stripped_and_parameterised(name):
    path = os.path.join(NOTEBOOKS, f"{name}.ipynb")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{name}: a cell has outputs committed; strip them"
        assert cell.execution_count is None, f"{name}: execution counts committed; strip them"
    assert code[0].metadata.get("tags") == ["parameters"], f"{name}: first code cell must be tagged"
    assert "SMOKE = False" in code[0].source and "RESULTS_PATH = None" in code[0].source
    # Colab: installs from the repository only when running in Colab.
    setup = code[1].source
    assert '"google.colab" in sys.modules' in setup and '%pip install -q "git+{REPO_URL}"' in setup
    # Every cell is valid IPython, including branches that only Colab takes.
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    for cell in code:
        ast.parse(transform(cell.source))


def test_quickstart(tmp_path, kernel_name):
    results, notebook = execute(
        "01_quickstart", tmp_path, kernel_name, WORKDIR=str(tmp_path / "quickstart")
    )
    assert results["episode_shapes"] == {
        "support_image": [5, 28, 28, 1],
        "support_strokes": [5, 64, 3],
        "query_image": [10, 28, 28, 1],
        "query_strokes": [10, 64, 3],
    }
    # 4 training alphabets x 4 rotations, Latin, and the 3 test alphabets (README).
    assert results["num_classes"]["test"] == 106
    assert results["steps"] == 60
    # load_run + evaluate_learner reproduces the trainer's own test on the same episodes.
    np.testing.assert_allclose(
        results["test_accuracy"], results["trainer_test_accuracy"], rtol=1e-6
    )
    # 60 second-order steps already beat 5-way chance (0.2) by far, CI included
    # (measured 0.484 +- 0.025 over 100 episodes).
    assert results["test_accuracy"] - results["test_accuracy_ci95"] > results["chance"] + 0.15
    # Training query loss over the 60 steps: 1.49 -> 1.24 measured.
    assert results["train_loss_last"] < 0.9 * results["train_loss_first"]
    assert count_images(notebook) == 3  # episode, adapted task, learning curve


def test_multimodal_fusion(tmp_path, kernel_name):
    from mmjax.data import CONDITIONS
    from mmjax.fusion import FUSION_METHODS

    results, notebook = execute(
        "02_multimodal_fusion", tmp_path, kernel_name, WORKDIR=str(tmp_path / "fusion")
    )
    assert set(results["fusion"]) == set(FUSION_METHODS)
    for name, row in results["fusion"].items():
        assert row["output_shape"] == [8, 16], name
        assert row["masked_influence"] == 0.0, f"{name}: a masked modality changed the output"
        assert row["stroke_sensitivity"] > 1e-3, f"{name}: present strokes have no effect"
        assert row["parameters"] > 0
    attention = results["attention"]
    assert attention["shape"] == [2, 15, 8]  # [modalities, queries, fusion features]
    assert attention["max_sum_error"] < 1e-5  # softmax over the present modalities
    assert attention["max_masked_weight"] == 0.0  # a missing modality gets exactly 0
    assert 0.0 < attention["mean_image_weight_both"] < 1.0
    assert list(results["conditions"]) == list(CONDITIONS)
    # Smoke run: 40 episodes of 5 ways x 3 queries, so an accuracy counts correct queries out
    # of 600 (float32 per-episode means k / 15 are off an integer count by far below 1e-3).
    queries = 40 * 5 * 3
    for name, row in results["conditions"].items():
        assert row["num_episodes"] == 40
        correct = row["accuracy"] * queries
        assert abs(correct - round(correct)) < 1e-3 and 0 <= round(correct) <= queries, name
        assert np.isfinite(row["accuracy_ci95"]), name
    # The same episodes as the trainer's final test: the "both" row reproduces it.
    np.testing.assert_allclose(
        results["conditions"]["both"]["accuracy"], results["trainer_test_accuracy"], rtol=1e-6
    )
    assert count_images(notebook) == 2  # attention heatmaps, missing-modality chart


def test_multi_device(tmp_path, kernel_name):
    results, notebook = execute("04_multi_device", tmp_path, kernel_name)
    assert results["num_devices"] == 8  # XLA_FLAGS of the test command (or the notebook's own)
    # A meta-batch of 16 tasks split over 8 devices: 2 tasks of 5 support images each.
    assert results["num_shards"] == 8
    assert results["shard_shape"] == [2, 5, 28, 28, 1]
    assert results["pmap_device_spread"] == 0.0  # pmean: every device holds the same update
    np.testing.assert_allclose(results["pmap_losses"], results["single_losses"], rtol=1e-5)
    np.testing.assert_allclose(results["sharded_losses"], results["single_losses"], rtol=1e-5)
    # Parameters moved (SGD, lr 0.1, 3 steps: largest change about 1e-2) and agree far below
    # (about 3e-8 per step is float32 summation order).
    assert results["max_param_change"] > 1e-3
    assert results["pmap_max_param_difference"] < 1e-6
    assert results["sharded_max_param_difference"] < 1e-6
    assert count_images(notebook) == 1  # the loss curves


def test_second_vs_first_order(tmp_path, kernel_name):
    results, notebook = execute(
        "03_second_vs_first_order", tmp_path, kernel_name, OUT_DIR=str(tmp_path / "orders")
    )
    assert results["orders"] == ["first", "second"] and results["inner_steps"] == [1, 2]
    rows = {(r["order"], r["inner_steps"]): r for r in results["rows"]}
    assert len(rows) == 4
    for key, row in rows.items():
        # Timings on a shared CPU bound nothing: finite, and tasks/s derived from s/step.
        assert all(np.isfinite(row[k]) for k in ("s_per_step", "compile_s", "peak_memory_mb")), key
        assert row["tasks_per_s"] == pytest.approx(row["meta_batch"] / row["s_per_step"], rel=1e-2)
        assert "test_accuracy" not in row, key  # smoke mode times only (no training)
    for order in ("second", "first"):  # FLOPs counted with the inner loop unrolled
        assert rows[(order, 2)]["gflop_per_step"] > rows[(order, 1)]["gflop_per_step"], order
    # Second order keeps every inner step's intermediates for the outer backward pass.
    assert rows[("second", 2)]["xla_temp_mb"] > rows[("second", 1)]["xla_temp_mb"]
    # Differentiating through the inner step costs FLOPs and temporary memory.
    for steps in (1, 2):
        second, first = rows[("second", steps)], rows[("first", steps)]
        assert second["gflop_per_step"] > first["gflop_per_step"]
        assert second["xla_temp_mb"] >= first["xla_temp_mb"]
    assert count_images(notebook) == 1  # the four panels
