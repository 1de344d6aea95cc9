"""The notebooks run as written: papermill executes each in smoke mode and checks its numbers.

Each notebook is committed with the outputs of a full run (``SMOKE = False``) stamped by
``notebooks/execute.py``: ``metadata.mmjax.source_sha256`` must be the hash of the current
cells, so a cell edited without re-running the notebook fails here with the command to run.

Each notebook takes the papermill parameters ``SMOKE`` and ``RESULTS_PATH`` (its first code
cell, tagged ``parameters``) and writes its key numbers to ``RESULTS_PATH`` as JSON; the
assertions are on those numbers. The kernel is this interpreter (a kernel spec written into a
temporary ``JUPYTER_PATH``), so a fresh virtual environment with only ``pip install -e
".[test]"`` runs them without any global Jupyter set-up.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import sys
from typing import Iterator
from unittest import mock

import numpy as np
import pytest

from tests.conftest import FULL_OPT_ENV

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


def _load_execute_tool():
    """``notebooks/execute.py`` (not a package): its ``source_sha256`` is the one the stamp uses."""
    spec = importlib.util.spec_from_file_location(
        "mmjax_notebooks_execute", os.path.join(NOTEBOOKS, "execute.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute_tool = _load_execute_tool()


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


def execute(
    name: str, tmp_path, kernel_name: str, full_opt: bool = False, **parameters
) -> tuple[dict, dict]:
    """Runs ``notebooks/<name>.ipynb`` in smoke mode; returns (results JSON, executed notebook).

    ``full_opt``: the kernel compiles with XLA's full optimisation (``tests/conftest.py``), for a
    notebook whose smoke run trains for longer than it compiles.
    """
    results_path = tmp_path / f"{name}.json"
    out = tmp_path / f"{name}.out.ipynb"
    # The kernel inherits this environment (XLA_FLAGS, MMJAX_CACHE_DIR from conftest) and runs
    # in the repository root: pass the data folder as an absolute path.
    os.environ["MMJAX_DATA_DIR"] = os.path.abspath(os.environ["MMJAX_DATA_DIR"])
    committed = os.path.join(NOTEBOOKS, f"{name}.ipynb")
    with open(committed, "rb") as f:
        stored = f.read()
    with mock.patch.dict(os.environ, FULL_OPT_ENV if full_opt else {}):
        papermill.execute_notebook(
            committed,
            str(out),
            parameters=dict(SMOKE=True, RESULTS_PATH=str(results_path), **parameters),
            kernel_name=kernel_name,
            cwd=ROOT,
            progress_bar=False,
            execution_timeout=600,
        )
    with open(committed, "rb") as f:  # the smoke run wrote to tmp_path only
        assert f.read() == stored, f"{committed} was overwritten by a smoke run"
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


def stored_run_problems(notebook, name: str) -> list[str]:
    """What is wrong with a committed notebook's stored run (empty: outputs match the source)."""
    rerun = f"re-run it: {execute_tool.command(os.path.join(NOTEBOOKS, name + '.ipynb'))}"
    stamp = notebook.metadata.get("mmjax")
    if not stamp:
        return [f"{name}: stored without a run (no metadata.mmjax); {rerun}"]
    problems = []
    if stamp.get("source_sha256") != execute_tool.source_sha256(notebook):
        problems.append(f"{name}: a cell changed since the stored run (source_sha256); {rerun}")
    if stamp.get("executed", {}).get("smoke") is not False:
        problems.append(f"{name}: the stored outputs are from a smoke run; {rerun}")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"{name}: execution counts {counts}, not 1..{len(code)}; {rerun}")
    for index, cell in enumerate(code):
        for output in cell.outputs:
            if output.output_type == "error":
                problems.append(f"{name}: code cell {index} stored an error ({output.ename})")
    if count_images(notebook) == 0:
        problems.append(f"{name}: no image/png output stored (plots missing); {rerun}")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_parameterised_and_stored_with_its_run(name):
    path = os.path.join(NOTEBOOKS, f"{name}.ipynb")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"], f"{name}: first code cell must be tagged"
    assert "SMOKE = False" in code[0].source and "RESULTS_PATH = None" in code[0].source
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in notebook.cells)
    # Colab: installs from the repository only when running in Colab.
    setup = code[1].source
    assert '"google.colab" in sys.modules' in setup and '%pip install -q "git+{REPO_URL}"' in setup
    # Every cell is valid IPython, including branches that only Colab takes.
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    for cell in code:
        ast.parse(transform(cell.source))
    # The outputs are those of a full run of this very source (notebooks/execute.py stamps it).
    problems = stored_run_problems(notebook, name)
    assert not problems, "\n".join(problems)


def test_stored_run_check_catches_an_edited_cell():
    notebook = nbformat.read(os.path.join(NOTEBOOKS, f"{NAMES[0]}.ipynb"), as_version=4)
    assert stored_run_problems(notebook, NAMES[0]) == []
    edited = copy.deepcopy(notebook)
    cell = next(c for c in edited.cells if c.cell_type == "code" and "chance" in c.source)
    cell.source = cell.source.replace("chance", "chancf", 1)  # one character
    problems = stored_run_problems(edited, NAMES[0])
    assert len(problems) == 1 and "source_sha256" in problems[0], problems
    assert "python notebooks/execute.py notebooks/01_quickstart.ipynb" in problems[0]
    # Outputs, counts and metadata are not source: the hash ignores them.
    edited = copy.deepcopy(notebook)
    edited.cells[1].outputs, edited.cells[1].metadata["x"] = [], 1
    assert execute_tool.source_sha256(edited) == execute_tool.source_sha256(notebook)
    # A markdown cell is source too, and so is a cell's type.
    edited.cells[0].cell_type = "raw"
    assert execute_tool.source_sha256(edited) != execute_tool.source_sha256(notebook)


def test_quickstart(tmp_path, kernel_name):
    results, notebook = execute(
        "01_quickstart",
        tmp_path,
        kernel_name,
        full_opt=True,  # a real training run: faster with the full optimisation
        WORKDIR=str(tmp_path / "quickstart"),
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
    # Full optimisation: the parameter agreement below (1e-6) is a float32 figure measured
    # under XLA's default code generation (with most optimisations off it is 2e-5).
    results, notebook = execute("04_multi_device", tmp_path, kernel_name, full_opt=True)
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
