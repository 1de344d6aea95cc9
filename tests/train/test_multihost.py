"""Two-process ``mmjax train --distributed`` on 127.0.0.1 (2 forced CPU devices each, gloo).

One uninterrupted two-process run (module fixture) is the reference: a run stopped by
SIGTERM and a run killed with ``kill -9`` must, once resumed, end exactly where it does, and a
single process with the same 4 global devices must match it within float rounding. Every
launch is bounded: on a timeout both processes are killed by pid and the test fails.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.train.logging import read_metrics
from tests.conftest import LEGACY_FUSION_FLAG
from tests.train.conftest import TINY_RUN, run_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_STEPS = 8
# The tiny run over 4 global devices: one task per device, a validation at steps 4 and 8.
MULTIHOST_RUN = [s for s in TINY_RUN if not s.startswith(("meta_batch_size", "num_steps"))] + [
    "meta_batch_size=4",
    f"num_steps={NUM_STEPS}",
    "eval_every=4",
    "parallel=sharded",
]
LAUNCH_TIMEOUT_S = 300
ENV_NAMES = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(cache, devices: int) -> dict:
    env = run_env(cache)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {LEGACY_FUSION_FLAG}"
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # compiles in a fraction of the time
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _args(workdir, sets) -> list[str]:
    args = [sys.executable, "-m", "mmjax.cli", "train", "--config", "quick", "--no_progress"]
    args += ["--workdir", str(workdir)]
    for item in sets:
        args += ["--set", item]
    return args


class Launch:
    """``mmjax train --distributed`` as ``len(workdirs)`` processes, outputs in files.

    The coordinator, process count and id are flags, or with ``use_env`` the ``JAX_*``
    environment variables.
    """

    def __init__(self, workdirs, cache, sets=MULTIHOST_RUN, logs=None, use_env=False):
        port = _free_port()
        logs = logs or os.path.dirname(os.fspath(workdirs[0]))
        self.start = time.monotonic()
        self.logs = [os.path.join(logs, f"process{i}-{port}.txt") for i in range(len(workdirs))]
        self.processes = []
        for index, workdir in enumerate(workdirs):
            launch = {
                "coordinator": f"127.0.0.1:{port}",
                "num_processes": str(len(workdirs)),
                "process_id": str(index),
            }
            env = _env(cache, 2)
            command = _args(workdir, sets) + ["--distributed"]
            for name, value in launch.items():
                if use_env:
                    env[ENV_NAMES[name]] = value
                else:
                    command += [f"--{name}", value]
            with open(self.logs[index], "w") as log:
                self.processes.append(
                    subprocess.Popen(
                        command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
                    )
                )

    def output(self, index: int) -> str:
        with open(self.logs[index]) as f:
            return f.read()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait()

    def wait(self, timeout: float = LAUNCH_TIMEOUT_S) -> list[int]:
        """Exit codes of all processes; kills both and fails the test after ``timeout``."""
        deadline = self.start + timeout
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.kill()
                outputs = "\n".join(self.output(i)[-3000:] for i in range(len(self.processes)))
                pytest.fail(f"the processes did not exit within {timeout} s:\n{outputs}")
        self.seconds = time.monotonic() - self.start
        return [process.returncode for process in self.processes]

    def wait_for_checkpoint(self, workdir, step: int, timeout: float = LAUNCH_TIMEOUT_S) -> None:
        path = os.path.join(os.fspath(workdir), "checkpoints", str(step))
        deadline = self.start + timeout
        while not os.path.isdir(path):
            if any(p.poll() is not None for p in self.processes):
                self.kill()
                pytest.fail(f"a process ended before checkpoint {step}:\n{self.output(0)}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no checkpoint {step} within {timeout} s:\n{self.output(0)}")
            time.sleep(0.05)


def _results(stdout: str) -> dict:
    """The results dict ``mmjax train`` prints last."""
    return json.loads(stdout[stdout.rindex("\n{") :])


def _raw(workdir, step) -> dict:
    """A checkpoint's arrays, restored onto this process's first device (any topology)."""
    path = os.path.join(os.fspath(workdir), "checkpoints", str(step), "default")
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata,
    )
    return jax.device_get(checkpointer.restore(path, target))


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _train_losses(workdir) -> dict:
    records = read_metrics(os.path.join(os.fspath(workdir), "metrics.jsonl"))
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def _steps(workdir) -> list[str]:
    return sorted(os.listdir(os.path.join(os.fspath(workdir), "checkpoints")))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("multihost-compilation-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    """An uninterrupted two-process run: ``(workdir, launch, exit codes)``."""
    workdir = tmp_path_factory.mktemp("multihost-reference") / "run"
    launch = Launch([workdir, workdir], cache)
    codes = launch.wait()
    print(f"two-process reference run: {launch.seconds:.1f} s")
    return workdir, launch, codes


def test_two_processes_train_checkpoint_evaluate_with_one_copy_of_each_output(reference):
    workdir, launch, codes = reference
    assert codes == [0, 0], launch.output(0) + launch.output(1)
    outputs = [launch.output(0), launch.output(1)]
    results = [_results(out) for out in outputs]
    assert results[0] == results[1]
    assert results[0]["steps"] == NUM_STEPS
    with open(workdir / "results.json") as f:
        assert json.load(f) == results[0]
    val_lines = [[line for line in out.splitlines() if "val accuracy" in line] for out in outputs]
    assert len(val_lines[0]) == 2 and val_lines[0] == val_lines[1]  # steps 4 and 8, same values

    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    keys = [(r["split"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)) == NUM_STEPS + 2  # every record once: 8 train + 2 val
    assert os.listdir(workdir / "tensorboard") and len(os.listdir(workdir / "tensorboard")) == 1
    assert _steps(workdir) == [str(s) for s in range(1, NUM_STEPS + 1)]  # all saves complete
    names = set(os.listdir(workdir))
    assert {"config.json", "results.json", "learning_curve.png", "metrics.jsonl"} <= names
    assert not [n for n in names if ".tmp" in n]


def test_one_process_with_the_same_global_devices_matches_within_rounding(
    reference, tmp_path, cache
):
    workdir, launch, codes = reference
    assert codes == [0, 0]
    single = tmp_path / "single"
    process = subprocess.run(
        _args(single, MULTIHOST_RUN),
        env=_env(cache, 4),
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    two, one = _results(launch.output(0)), _results(process.stdout)
    assert {k: v for k, v in one.items() if k != "test_loss"} == {
        k: v for k, v in two.items() if k != "test_loss"
    }
    losses_two, losses_one = _train_losses(workdir), _train_losses(single)
    assert sorted(losses_one) == sorted(losses_two) == list(range(1, NUM_STEPS + 1))
    difference = max(abs(losses_one[s] - losses_two[s]) for s in losses_one)
    params_two, params_one = _raw(workdir, NUM_STEPS), _raw(single, NUM_STEPS)
    param_difference = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two), strict=True)
    )
    print(
        f"1 x 4 devices vs 2 x 2 devices: max |train loss diff| {difference:.2e}, "
        f"max |param diff| at step {NUM_STEPS} {param_difference:.2e}, "
        f"|test loss diff| {abs(one['test_loss'] - two['test_loss']):.2e}"
    )
    assert difference < 1e-5 and param_difference < 1e-5
    assert abs(one["test_loss"] - two["test_loss"]) < 1e-5


def test_sigterm_to_one_process_then_the_other_stops_both_at_one_step(reference, tmp_path, cache):
    workdir = tmp_path / "run"
    launch = Launch([workdir, workdir], cache)
    launch.wait_for_checkpoint(workdir, 1)
    launch.processes[0].send_signal(signal.SIGTERM)
    time.sleep(3)
    launch.processes[1].send_signal(signal.SIGTERM)  # no-op if it has already exited
    codes = launch.wait()
    outputs = [launch.output(0), launch.output(1)]
    assert codes == [0, 0], outputs
    stopped = [_results(out) for out in outputs]
    assert stopped[0] == stopped[1]
    assert stopped[0]["interrupted"] == "SIGTERM"
    step = stopped[0]["step"]
    assert 1 <= step < NUM_STEPS  # step 1 when the signal came between its save and the vote
    assert _steps(workdir) == [str(s) for s in range(1, step + 1)]  # final save complete
    _assert_trees_equal(_raw(workdir, step), _raw(reference[0], step))

    resumed = Launch([workdir, workdir], cache)
    assert resumed.wait() == [0, 0], resumed.output(0) + resumed.output(1)
    assert f"at step {step}" in resumed.output(0) and f"at step {step}" in resumed.output(1)
    assert _results(resumed.output(0)) == _results(reference[1].output(0))
    assert _results(resumed.output(1)) == _results(reference[1].output(0))
    _assert_trees_equal(_raw(workdir, NUM_STEPS), _raw(reference[0], NUM_STEPS))
    assert _train_losses(workdir) == _train_losses(reference[0])


def test_kill_9_both_processes_then_resume_equals_uninterrupted(reference, tmp_path, cache):
    workdir = tmp_path / "run"
    launch = Launch([workdir, workdir], cache)
    launch.wait_for_checkpoint(workdir, 3)
    for process in launch.processes:
        os.kill(process.pid, signal.SIGKILL)
    assert launch.wait() == [-signal.SIGKILL, -signal.SIGKILL]
    resumed = Launch([workdir, workdir], cache)
    assert resumed.wait() == [0, 0], resumed.output(0) + resumed.output(1)
    assert "Resumed from" in resumed.output(0)
    assert _results(resumed.output(0)) == _results(reference[1].output(0))
    _assert_trees_equal(_raw(workdir, NUM_STEPS), _raw(reference[0], NUM_STEPS))
    assert _train_losses(workdir) == _train_losses(reference[0])


@pytest.mark.parametrize(
    "case, sets, message",
    [
        (
            "parallel",
            [s for s in MULTIHOST_RUN if s != "parallel=sharded"],
            "--distributed needs config.parallel='sharded'",
        ),
        (
            "batch",
            [s for s in MULTIHOST_RUN if not s.startswith("meta_batch")] + ["meta_batch_size=2"],
            "must be divisible by the 4 devices",
        ),
        ("workdir", MULTIHOST_RUN, "--workdir must be one directory shared by all 2 processes"),
    ],
)
def test_refusals_exit_2_with_a_message_on_both_processes(tmp_path, cache, case, sets, message):
    if case == "workdir":
        workdirs = [tmp_path / "host0", tmp_path / "host1"]
    else:
        workdirs = [tmp_path / "run"] * 2
    # The batch case passes coordinator, count and id as JAX_* variables, the others as flags.
    launch = Launch(workdirs, cache, sets=sets, logs=tmp_path, use_env=case == "batch")
    codes = launch.wait(timeout=120)
    outputs = [launch.output(0), launch.output(1)]
    assert codes == [2, 2], outputs
    assert message in outputs[0] and message in outputs[1]
    assert launch.seconds < 90, f"refused only after {launch.seconds:.0f} s"
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--coordinator", "127.0.0.1:1"], "but no num_processes, process_id"),
        (["--num_processes", "2"], "need --distributed"),
    ],
)
def test_incomplete_launch_flags_exit_2(tmp_path, flags, message):
    env = _env(None, 2)
    for name in ENV_NAMES.values():
        env.pop(name, None)
    distributed = ["--distributed"] if "--coordinator" in flags else []
    process = subprocess.run(
        _args(tmp_path / "run", MULTIHOST_RUN) + distributed + flags,
        env=env,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2, process.stdout + process.stderr
    assert message in process.stderr
