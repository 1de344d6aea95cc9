"""Runs a notebook in place and stamps it: the outputs of a full run, committed as they are.

    python notebooks/execute.py notebooks/01_quickstart.ipynb [--smoke] [--timeout S]

The notebook runs with papermill against this checkout's mmjax (the repository root is put
first on the kernel's ``PYTHONPATH``), in a fresh temporary working directory (so a training
run starts from scratch instead of resuming an old ``workdir/``), with ``MMJAX_DATA_DIR``
and ``XLA_FLAGS`` from the environment. On success the executed notebook replaces the file,
with ``metadata["mmjax"] = {"source_sha256": ..., "executed": {...}}`` (see
:func:`source_sha256` and :func:`run_info`); papermill's per-cell metadata, its timestamps
and its injected-parameters cell are removed, so the stored notebook keeps its own tagged
parameters cell (``SMOKE = False``). A failed or timed-out run leaves the file untouched.
``tests/notebooks/test_notebooks.py`` checks that the stored outputs belong to the current
source.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping

PROBE_TIMEOUT_S = 300  # seconds for the backend probe (jax import and device start-up)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = "mmjax-execute-python"
# What papermill/nbclient add to every cell's metadata.
_CELL_NOISE = ("papermill", "execution", "ExecuteTime")


def source_sha256(notebook: Mapping[str, Any]) -> str:
    """sha256 (hex) of the notebook's source: a canonical JSON of ``[[cell_type, source], ...]``.

    Args:
      notebook: a notebook as nbformat or ``json.load`` reads it (a cell's ``source`` a string
        or a list of lines).

    Returns:
      64 hex digits; they change when any cell's type or text changes, not with outputs,
      execution counts or metadata.
    """
    cells = notebook.get("cells")
    if not isinstance(cells, list):
        raise ValueError("notebook: expected a notebook with a list of 'cells'")
    canonical = []
    for cell in cells:
        source = cell["source"]
        canonical.append([cell["cell_type"], source if isinstance(source, str) else "".join(source)])
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def command(path: str) -> str:
    """The command that re-runs and re-stamps ``path`` (for error messages)."""
    relative = os.path.relpath(os.path.abspath(path), ROOT)
    return f"nice -n 19 python notebooks/execute.py {relative}"


def kernel_environment() -> dict[str, str]:
    """This environment, with the repository first on ``PYTHONPATH`` and an absolute data dir."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if env.get("MMJAX_DATA_DIR"):
        env["MMJAX_DATA_DIR"] = os.path.abspath(env["MMJAX_DATA_DIR"])
    return env


def run_info(env: Mapping[str, str]) -> dict[str, Any]:
    """jax version, backend and devices as the kernel sees them (a subprocess, same env)."""
    probe = (
        "import json, jax; d = jax.devices(); print(json.dumps({'jax': jax.__version__, "
        "'backend': jax.default_backend(), 'devices': f'{len(d)} x {d[0].device_kind}'}))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], env=dict(env), capture_output=True, text=True,
            check=True, timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"probing jax's backend took over {PROBE_TIMEOUT_S} s (a stuck accelerator "
            "runtime?); nothing was run or written"
        ) from None
    info = json.loads(out.stdout.strip().splitlines()[-1])
    from mmjax.train.throughput import cpu_name

    machine = f"{platform.system()} {platform.machine()}, {cpu_name()}, {os.cpu_count()} cores"
    return {"machine": machine, **info}


def _collapse_carriage_returns(text: str) -> str:
    r"""What a terminal shows of ``text``: each line's last ``\r``-separated segment (progress bars)."""
    lines = ([s for s in line.split("\r") if s] for line in text.split("\n"))
    return "\n".join(segments[-1] if segments else "" for segments in lines)


def merge_streams(outputs: list) -> list:
    """Joins consecutive outputs of one stream (tqdm redraws) and keeps what a terminal shows."""
    merged: list = []
    for output in outputs:
        if (output.get("output_type") == "stream" and merged
                and merged[-1].get("output_type") == "stream" and merged[-1]["name"] == output["name"]):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(copy.deepcopy(output))
    for output in merged:
        if output.get("output_type") == "stream":
            output["text"] = _collapse_carriage_returns(output["text"])
    return merged


def clean(executed: Any, original: Any) -> Any:
    """The executed notebook without papermill's traces, with the original's metadata.

    Removes the ``injected-parameters`` cell, papermill's and nbclient's per-cell metadata
    (status, timestamps, durations), empty ``tags`` and progress-bar redraws (:func:`merge_streams`).
    """
    nb = copy.deepcopy(executed)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        for key in _CELL_NOISE:
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    nb.metadata = copy.deepcopy(original.metadata)
    return nb


def execute(path: str, *, smoke: bool = False, timeout: float = 1800.0) -> dict[str, Any]:
    """Runs ``path`` with papermill and, on success, replaces it with the stamped result.

    Args:
      path: the ``.ipynb`` file, rewritten in place only if every cell ran.
      smoke: run with ``SMOKE = True`` (injected, then removed; recorded in the stamp).
      timeout: seconds one cell may run (papermill's ``execution_timeout``).

    Returns:
      ``metadata["mmjax"]`` as written.
    """
    import nbformat
    import papermill

    if not path.endswith(".ipynb") or not os.path.isfile(path):
        raise SystemExit(f"path: expected an existing .ipynb file, got {path!r}")
    if not timeout > 0:
        raise SystemExit(f"--timeout: expected seconds > 0, got {timeout}")
    original = nbformat.read(path, as_version=4)
    sha = source_sha256(original)
    env = kernel_environment()
    scratch = tempfile.mkdtemp(prefix="mmjax-execute-")
    spec_dir = os.path.join(scratch, "jupyter", "kernels", KERNEL)
    os.makedirs(spec_dir)
    with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": "mmjax execute", "language": "python"}, f)
    env["JUPYTER_PATH"] = os.pathsep.join(
        [os.path.join(scratch, "jupyter")] + ([env["JUPYTER_PATH"]] if env.get("JUPYTER_PATH") else [])
    )
    info = run_info(env)
    cwd = os.path.join(scratch, "cwd")
    os.makedirs(cwd)
    # notebook 03 imports benchmarks/maml_orders.py from ./benchmarks (as in a clone)
    os.symlink(os.path.join(ROOT, "benchmarks"), os.path.join(cwd, "benchmarks"))
    out = os.path.join(scratch, os.path.basename(path))
    saved_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits the tool's environment
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            path, out, parameters={"SMOKE": True} if smoke else {}, kernel_name=KERNEL, cwd=cwd,
            progress_bar=False, execution_timeout=timeout,
        )
    except papermill.PapermillExecutionError as error:
        raise SystemExit(
            f"{path}: cell {error.cell_index} (execution count {error.exec_count}) failed: "
            f"{error.ename}: {error.evalue}\n{path} is unchanged; the partial run is in {scratch}"
        ) from None
    except TimeoutError:
        running = "a cell"
        if os.path.exists(out):
            partial = nbformat.read(out, as_version=4)
            for index, cell in enumerate(partial.cells):
                if cell.metadata.get("papermill", {}).get("status") == "running":
                    running = f"cell {index}"
        raise SystemExit(
            f"{path}: {running} ran longer than --timeout {timeout:g} s; {path} is unchanged "
            f"(the partial run is in {scratch}); raise --timeout to let it finish"
        ) from None
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    wall_s = time.perf_counter() - start
    executed = nbformat.read(out, as_version=4)
    nb = clean(executed, original)
    if source_sha256(nb) != sha:
        raise SystemExit(f"{path}: the executed cells' source differs from the file's; unchanged")
    stamp = {
        "source_sha256": sha,
        "executed": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **info,
            "smoke": bool(smoke),
            "wall_s": round(wall_s, 1),
        },
    }
    nb.metadata["mmjax"] = stamp
    nbformat.validate(nb)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.replace(tmp, path)
    shutil.rmtree(scratch, ignore_errors=True)
    return stamp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="the .ipynb to run and rewrite in place")
    parser.add_argument("--smoke", action="store_true", help="run with SMOKE = True (CI size)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell (1800)")
    args = parser.parse_args(argv)
    stamp = execute(args.notebook, smoke=args.smoke, timeout=args.timeout)
    print(f"{args.notebook}: {json.dumps(stamp)}")


if __name__ == "__main__":
    main()
