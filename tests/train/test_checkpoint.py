"""Checkpoints are atomic: an interrupted save (even SIGKILL inside it) never becomes the latest."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.train.checkpoint import Checkpointer, CheckpointError
from mmjax.train.logging import read_metrics
from tests.train.conftest import run_cli, run_env, tiny_run_args

TMP_SUFFIX = ".orbax-checkpoint-tmp"
AtomicRename = ocp.path.atomicity.AtomicRenameTemporaryPath


def _state(value: float) -> dict:
    return {
        "step": jnp.asarray(int(value), jnp.int32),
        "params": {"w": jnp.full((3, 2), value, jnp.float32)},
        "key": jnp.asarray([7, int(value)], jnp.uint32),
    }


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def _raw(workdir, step) -> dict:
    """A checkpoint's arrays as saved, read without any target structure."""
    path = os.path.join(os.fspath(workdir), "checkpoints", str(step), "default")
    return jax.device_get(ocp.StandardCheckpointer().restore(path))


def _crash_in_finalize(monkeypatch):
    """Makes the next save fail after writing everything but before the rename."""

    async def crash(self, *args, **kwargs):
        raise KeyboardInterrupt(f"simulated crash before renaming {self.get()}")

    monkeypatch.setattr(AtomicRename, "finalize", crash)


def test_save_restore_round_trip(tmp_path):
    checkpointer = Checkpointer(tmp_path, max_to_keep=2)
    assert checkpointer.latest_step() is None
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpointer.restore(_state(0.0))
    for step in (1, 2, 3):
        checkpointer.save(step, _state(float(step)))
    assert checkpointer.latest_step() == 3
    assert sorted(os.listdir(checkpointer.directory)) == ["2", "3"]  # max_to_keep
    _assert_trees_equal(checkpointer.restore(_state(0.0)), _state(3.0))
    _assert_trees_equal(checkpointer.restore(_state(0.0), step=2), _state(2.0))
    checkpointer.close()


def test_interrupted_save_is_ignored_then_cleaned_by_the_writer(tmp_path, monkeypatch):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, _state(1.0))
    with monkeypatch.context() as patch:
        _crash_in_finalize(patch)
        with pytest.raises(KeyboardInterrupt, match="simulated crash"):
            checkpointer.save(2, _state(2.0))
    checkpointer.close()
    directory = tmp_path / "checkpoints"
    assert sorted(os.listdir(directory)) == ["1", "2" + TMP_SUFFIX]
    assert os.listdir(directory / ("2" + TMP_SUFFIX))  # data of step 2 was written...

    reader = Checkpointer(tmp_path)  # ...but a reader sees step 1 only and deletes nothing,
    assert reader.latest_step() == 1
    _assert_trees_equal(reader.restore(_state(0.0)), _state(1.0))
    reader.close()
    assert sorted(os.listdir(directory)) == ["1", "2" + TMP_SUFFIX]

    writer = Checkpointer(tmp_path, clean_up_temporary=True)  # the trainer removes the leftover
    assert writer.removed_temporary == ["2" + TMP_SUFFIX]
    assert writer.latest_step() == 1
    assert sorted(os.listdir(directory)) == ["1"]
    writer.save(2, _state(2.0))
    _assert_trees_equal(writer.restore(_state(0.0)), _state(2.0))
    writer.close()


def test_restore_checks_structure_and_max_to_keep(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep=0 must be an int >= 1"):
        Checkpointer(tmp_path, max_to_keep=0)
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, _state(1.0))
    with pytest.raises(Exception):  # noqa: B017 (orbax raises ValueError or KeyError by version); a different model's state never loads silently
        checkpointer.restore({"step": jnp.zeros((), jnp.int32), "other": jnp.zeros(3)})
    checkpointer.close()


# Runs the CLI, but pauses forever inside the save of step $PAUSE_AT_STEP once every array
# is written and before orbax renames the temporary directory: the test SIGKILLs it there.
PAUSE_BEFORE_RENAME = r"""
import os, sys, time
import orbax.checkpoint as ocp
from mmjax.cli import main

atomic = ocp.path.atomicity.AtomicRenameTemporaryPath
original = atomic.finalize

async def finalize(self, *args, **kwargs):
    if self.get_final().name == os.environ["PAUSE_AT_STEP"]:
        with open(os.environ["PAUSE_MARKER"], "w") as f:
            f.write(str(self.get()))
        while True:
            time.sleep(1)
    return await original(self, *args, **kwargs)

atomic.finalize = finalize
sys.exit(main(sys.argv[1:]))
"""


def _comparable(records):
    timing = {"step_time", "tasks_per_second", "window_seconds", "host_peak_rss_bytes"}
    return [{k: v for k, v in r.items() if k not in timing} for r in records]


@pytest.mark.slow
def test_sigkill_during_save_resumes_from_last_complete_checkpoint(
    tmp_path, reference_run, compilation_cache
):
    workdir, marker = tmp_path / "killed", tmp_path / "paused"
    env = dict(run_env(compilation_cache), PAUSE_AT_STEP="4", PAUSE_MARKER=str(marker))
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSE_BEFORE_RENAME] + tiny_run_args(workdir),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before pausing in the save:\n{process.stderr.read()}")
        assert time.time() < deadline, "the run did not reach the save of step 4"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # inside the save of step 4
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    directory = workdir / "checkpoints"
    assert sorted(os.listdir(directory)) == ["1", "2", "3", "4" + TMP_SUFFIX]
    assert marker.read_text() == str(directory / ("4" + TMP_SUFFIX))
    reader = Checkpointer(workdir)
    assert reader.latest_step() == 3  # the complete, written-but-unrenamed step 4 is ignored
    reader.close()
    _assert_trees_equal(_raw(workdir, 3), _raw(reference_run, 3))

    resumed = run_cli(workdir, compilation_cache=compilation_cache)  # the same command again
    assert f"Resumed from {directory} at step 3" in resumed.stdout
    assert f"Removed the unfinished checkpoint save 4{TMP_SUFFIX}" in resumed.stdout
    assert sorted(os.listdir(directory)) == [str(s) for s in range(1, 7)]  # leftover cleaned
    assert json.load(open(workdir / "results.json")) == json.load(
        open(reference_run / "results.json")
    )
    for step in (4, 6):
        _assert_trees_equal(_raw(workdir, step), _raw(reference_run, step))
    assert _comparable(read_metrics(workdir / "metrics.jsonl")) == _comparable(
        read_metrics(reference_run / "metrics.jsonl")
    )


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mmjax.train.checkpoint"]


def _truncate(path) -> int:
    """Cuts ``path`` to half its size; returns the original size."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return size


def _saved(tmp_path, steps=(1, 2, 3)) -> str:
    checkpointer = Checkpointer(tmp_path, max_to_keep=10)
    for step in steps:
        checkpointer.save(step, _state(float(step)))
    checkpointer.close()
    return str(tmp_path / "checkpoints")


def _data_file(step_dir) -> str:
    (name,) = os.listdir(os.path.join(step_dir, "default", "d"))
    return os.path.join("default", "d", name)


def test_truncated_data_file_falls_back_and_the_writer_sets_it_aside(tmp_path, caplog):
    directory = _saved(tmp_path)
    name = _data_file(os.path.join(directory, "3"))
    size = _truncate(os.path.join(directory, "3", name))
    reason = (
        f"file {name}: Requested byte range [0, {size}) is not valid for value of size "
        f"{size // 2} (OUT_OF_RANGE)"
    )

    reader = Checkpointer(tmp_path)
    state, step = reader.restore_newest(_state(0.0))  # a reader moves nothing
    reader.close()
    assert step == 2
    _assert_trees_equal(state, _state(2.0))
    assert _warnings(caplog) == [f"Checkpoint step 3 in {directory} does not restore: {reason}"]
    assert sorted(os.listdir(directory)) == ["1", "2", "3"]

    writer = Checkpointer(tmp_path, max_to_keep=10, clean_up_temporary=True)
    state, step = writer.restore_newest(_state(0.0), set_aside=True)
    assert step == 2
    assert sorted(os.listdir(directory)) == ["1", "2"]
    assert os.listdir(tmp_path / "corrupt_checkpoints") == ["3"]
    assert writer.latest_step() == 2  # orbax forgot step 3 ...
    writer.save(3, _state(3.5))  # ... and saves it again beside the set-aside copy
    _assert_trees_equal(writer.restore(_state(0.0)), _state(3.5))
    writer.close()
    assert os.path.getsize(tmp_path / "corrupt_checkpoints" / "3" / name) == size // 2


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("metadata", "file default/_METADATA is not valid JSON (truncated?): "),
        ("array_metadata", "file default/array_metadatas/process_0 is not valid JSON"),
        ("manifest", "file default/manifest.ocdbt: Length in header (113) does not match"),
        ("empty", "its directory is empty"),
        ("no_default", "its directory has no 'default' item, only _CHECKPOINT_METADATA, "),
    ],
)
def test_each_kind_of_damage_is_named_in_one_line(tmp_path, caplog, damage, reason):
    directory = _saved(tmp_path, steps=(1, 3))
    step_dir = os.path.join(directory, "3")
    if damage == "metadata":
        _truncate(os.path.join(step_dir, "default", "_METADATA"))
    elif damage == "array_metadata":
        _truncate(os.path.join(step_dir, "default", "array_metadatas", "process_0"))
    elif damage == "manifest":
        _truncate(os.path.join(step_dir, "default", "manifest.ocdbt"))
    elif damage == "empty":
        shutil.rmtree(step_dir)
        os.mkdir(step_dir)
    else:
        shutil.rmtree(os.path.join(step_dir, "default"))
    checkpointer = Checkpointer(tmp_path)
    state, step = checkpointer.restore_newest(_state(0.0))
    checkpointer.close()
    assert step == 1
    _assert_trees_equal(state, _state(1.0))
    (message,) = _warnings(caplog)
    prefix = f"Checkpoint step 3 in {directory} does not restore: "
    assert message.startswith(prefix + reason.format(directory=directory)), message
    assert "\n" not in message and "tensorstore_spec" not in message


def test_no_checkpoint_restores_is_one_error_and_nothing_moves(tmp_path):
    directory = _saved(tmp_path, steps=(1, 2))
    for step in ("1", "2"):
        shutil.rmtree(os.path.join(directory, step, "default"))
    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError) as error:
        checkpointer.restore_newest(_state(0.0), set_aside=True)
    checkpointer.close()
    assert str(error.value) == (
        f"no checkpoint in {directory} restores (step 2, 1: its directory has no 'default' "
        "item, only _CHECKPOINT_METADATA, commit_success.txt); fix or remove them, or start a "
        "new run in another --workdir"
    )
    assert sorted(os.listdir(directory)) == ["1", "2"]
    assert not os.path.exists(tmp_path / "corrupt_checkpoints")


def test_a_different_models_checkpoint_is_not_set_aside(tmp_path):
    directory = _saved(tmp_path, steps=(1, 2))
    other = {
        "step": jnp.zeros((), jnp.int32),
        "params": {"w": jnp.zeros((5, 2))},
        "key": _state(0)["key"],
    }
    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError) as error:
        checkpointer.restore_newest(other, set_aside=True)
    checkpointer.close()
    assert str(error.value) == (
        f"no checkpoint in {directory} restores (step 2, 1: it holds the state of another model "
        "or optimizer: 1 array(s) differ, params.w has shape (5, 2) here, (3, 2) in the "
        "checkpoint); the config changes the shapes of the trained state, which a resumed run "
        "cannot do: start a new run in another --workdir"
    )
    assert sorted(os.listdir(directory)) == ["1", "2"]
