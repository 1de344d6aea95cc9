"""The workdir: config.json is the run's identity, one trainer at a time, damaged checkpoints
fall back, unwritable paths are one-line errors. In-process CLI runs of the tiny config."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from mmjax import configs
from mmjax.cli import main
from mmjax.train import workdir as workdirs
from tests.train.conftest import TINY_RUN, tiny_run_args

# Stops the trainer before it builds anything: a refusal must come before this.
BUILD = "mmjax.train.loop.build_run"


def _train(workdir, *extra, flags=()) -> int:
    return main(tiny_run_args(workdir, "num_steps=3", *extra) + list(flags))


def _snapshot(workdir) -> dict:
    """Every file of the workdir with its size and mtime (to prove nothing was written)."""
    files = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, workdir)] = (
                os.path.getsize(path),
                os.stat(path).st_mtime_ns,
            )
    return files


def _err_line(capsys) -> str:
    """The one line the CLI printed on stderr (stdout dropped)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmjax ")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 3-step tiny run (checkpoints 1, 2, 3); tests work on copies of it."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    assert _train(workdir) == 0
    assert not (workdir / workdirs.LOCK_FILE).exists()  # released on exit
    return workdir


@pytest.fixture
def run(finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    return workdir


@pytest.mark.parametrize(
    "extra, differ",
    [
        (
            ("maml.inner_lr=0.1", "seed=1"),
            "2 key(s) differ (maml.inner_lr: 0.4 -> 0.1, seed: 0 -> 1)",
        ),
        (("model.features=16",), "1 key(s) differ (model.features: 4 -> 16)"),
        (("ways=200",), "1 key(s) differ (ways: 5 -> 200)"),
        (("maml.first_order=False",), "1 key(s) differ (maml.first_order: True -> False)"),
    ],
)
def test_resume_with_another_config_is_refused_before_any_write(run, capsys, extra, differ):
    before = _snapshot(run)
    assert _train(run, *extra) == 2
    assert _err_line(capsys) == (
        f"mmjax train: error: {run}/config.json records a different run: {differ}; resume "
        "with the run's config, use another --workdir, or pass --override to go on with the "
        "new one (recorded in config_history.jsonl)"
    )
    assert _snapshot(run) == before


def test_another_config_file_is_refused_listing_added_and_removed_keys(run, capsys):
    args = ["train", "--config", "omniglot_protonet_5w1s", "--no_progress", "--workdir", str(run)]
    assert main(args) == 2
    line = _err_line(capsys)
    assert "algorithm: 'maml' -> 'protonet'" in line
    assert "maml.inner_lr: 0.4 -> <absent>" in line


def test_override_resumes_with_the_new_config_and_records_it(run, capsys):
    assert _train(run, "maml.inner_lr=0.1", "seed=1", flags=["--override"]) == 0
    out = capsys.readouterr().out
    assert f"Resumed from {run}/checkpoints at step 3" in out
    assert (
        "Config changed from step 3 (--override): maml.inner_lr: 0.4 -> 0.1, seed: 0 -> 1; "
        "see config_history.jsonl"
    ) in out
    config = json.loads((run / "config.json").read_text())
    assert config["maml"]["inner_lr"] == 0.1 and config["seed"] == 1
    (record,) = [
        json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()
    ]
    assert record["step"] == 3 and record["override"] is True
    assert record["changes"] == {"maml.inner_lr": [0.4, 0.1], "seed": [0, 1]}
    config = configs.apply_overrides(configs.get_config("quick"), [*TINY_RUN, "num_steps=3"])
    new = configs.apply_overrides(config, ["maml.inner_lr=0.1", "seed=1"])
    assert workdirs.check_identity(run, new) == {}  # the new config is now the run's identity
    with pytest.raises(workdirs.ConfigMismatchError, match=r"\(maml.inner_lr: 0.1 -> 0.4, seed"):
        workdirs.check_identity(run, config)


def test_override_that_cannot_build_writes_nothing(run, capsys):
    before = _snapshot(run)
    assert _train(run, "ways=200", flags=["--override"]) == 2
    assert _err_line(capsys) == "mmjax train: error: ways=200 exceeds the 26 classes available"
    assert _snapshot(run) == before  # the old run's config.json is intact


def test_override_of_the_model_shapes_is_refused_and_moves_nothing(run, capsys):
    before = _snapshot(run)
    assert _train(run, "model.features=8", flags=["--override"]) == 2
    assert _err_line(capsys) == (
        f"mmjax train: error: no checkpoint in {run}/checkpoints restores (step 3, 2, 1: it "
        "holds the state of another model or optimizer: 51 array(s) differ, "
        "opt_state.0.mu.params.encoder.BatchStatNorm_0.bias has shape (8,) here, (4,) in the "
        "checkpoint); the config changes the shapes of the trained state, which a resumed run "
        "cannot do: start a new run in another --workdir"
    )
    assert _snapshot(run) == before


def test_extending_num_steps_needs_no_override_and_shortening_is_refused(run, capsys):
    assert _train(run, "num_steps=4", "log_every=2") == 0
    assert (
        "Config changed from step 3 (settings that keep the run's identity): log_every: 1 -> 2, "
        "num_steps: 3 -> 4; see config_history.jsonl"
    ) in capsys.readouterr().out
    (record,) = [
        json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()
    ]
    assert record["override"] is False and record["step"] == 3
    before = _snapshot(run)
    assert _train(run, "num_steps=2", "log_every=2") == 2
    assert _err_line(capsys) == (
        f"mmjax train: error: num_steps=2 is below step 4, which the run in {run} has reached; "
        "a run cannot be shortened (set num_steps >= 4)"
    )
    assert _snapshot(run) == before


def _truncate_data_file(step_dir) -> tuple[str, int]:
    (name,) = os.listdir(step_dir / "default" / "d")
    path = step_dir / "default" / "d" / name
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return f"default/d/{name}", size


def test_truncated_latest_checkpoint_falls_back_in_evaluate_and_train(run, capsys, caplog):
    name, size = _truncate_data_file(run / "checkpoints" / "3")
    warning = (
        f"Checkpoint step 3 in {run}/checkpoints does not restore: file {name}: Requested byte "
        f"range [0, {size}) is not valid for value of size {size // 2} (OUT_OF_RANGE)"
    )
    assert main(["evaluate", "--checkpoint", str(run), "--episodes", "2"]) == 0
    out, err = capsys.readouterr()
    assert warning in caplog.messages
    assert (
        "Checkpoint step 3 does not restore; using step 2 (files left in place: mmjax train "
        "in this workdir moves them aside)"
    ) in err
    assert json.loads(out)["step"] == 2  # stdout stays the JSON result
    assert sorted(os.listdir(run / "checkpoints")) == ["1", "2", "3"]  # a reader moves nothing

    caplog.clear()
    assert _train(run) == 0
    out, err = capsys.readouterr()
    assert warning in caplog.messages
    assert (
        f"Moved the checkpoint step 3 that does not restore to {run}/corrupt_checkpoints/3" in err
    )
    assert f"Resumed from {run}/checkpoints at step 2" in out
    assert sorted(os.listdir(run / "checkpoints")) == ["1", "2", "3"]  # step 3 trained again
    assert (run / "corrupt_checkpoints" / "3" / name).stat().st_size == size // 2
    assert json.loads((run / "results.json").read_text())["steps"] == 3


def test_emptied_step_dirs_and_no_restorable_checkpoint_in_evaluate(run, capsys):
    for step in ("1", "2", "3"):
        shutil.rmtree(run / "checkpoints" / step)
        os.mkdir(run / "checkpoints" / step)
    assert main(["evaluate", "--checkpoint", str(run)]) == 2
    assert _err_line(capsys) == (
        f"mmjax evaluate: error: no checkpoint in {run}/checkpoints restores (step 3, 2, 1: its "
        "directory is empty); fix or remove them, or start a new run in another --workdir"
    )


def test_second_trainer_on_a_locked_workdir_is_refused(run, capsys, monkeypatch):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from mmjax.train.workdir import acquire_lock; "
                "acquire_lock(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"
            ),
            str(run),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        monkeypatch.setattr(BUILD, lambda config: pytest.fail("built a run on a locked workdir"))
        before = _snapshot(run)
        assert _train(run) == 2
        since = json.loads((run / "train.lock").read_text())["since"]
        assert _err_line(capsys) == (
            f"mmjax train: error: {run} is in use by another mmjax train (pid {holder.pid} on "
            f"host {socket.gethostname()}, since {since}; lock {run}/train.lock); wait for it, "
            "stop it or use another --workdir (delete the lock file only if that process is gone)"
        )
        assert _snapshot(run) == before  # no metrics appended, lock untouched
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    path = tmp_path / "train.lock"
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "since": "yesterday"}
    path.write_text(json.dumps(stale))
    with workdirs.acquire_lock(tmp_path) as lock:
        assert json.loads((path).read_text())["pid"] == os.getpid()
        assert lock.path == str(path)
    assert caplog.messages == [
        (
            f"Taking over the stale lock {path} of a process that is gone (pid {stale['pid']} on "
            f"host {socket.gethostname()}, since yesterday)"
        )
    ]
    assert not path.exists()


def test_lock_of_a_reused_pid_is_stale_and_other_hosts_are_respected(tmp_path):
    path = tmp_path / "train.lock"
    reused = {"pid": os.getpid(), "host": socket.gethostname(), "start": "1"}  # not our start
    path.write_text(json.dumps(reused))
    workdirs.acquire_lock(tmp_path).release()
    other = {"pid": os.getpid(), "host": "elsewhere", "since": "now"}
    path.write_text(json.dumps(other))
    with pytest.raises(workdirs.WorkdirLockedError, match=r"\(pid \d+ on host elsewhere, since"):
        workdirs.acquire_lock(tmp_path)
    path.write_text("")
    with pytest.raises(workdirs.WorkdirLockedError, match="which names no process"):
        workdirs.acquire_lock(tmp_path)
    assert workdirs.acquire_lock(tmp_path, writer=False).path is None  # not process 0


def test_unwritable_workdir_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(BUILD, lambda config: pytest.fail("decoded data for an unusable workdir"))
    workdir = tmp_path / "file" / "run"
    assert _train(workdir) == 2
    assert _err_line(capsys) == (
        f"mmjax train: error: workdir '{workdir}' is not a writable folder (Not a directory: "
        f"{workdir}); pass --workdir (or train(workdir=...)) a folder you can write"
    )


def test_unwritable_cache_is_a_warning_and_training_goes_on(tmp_path, caplog, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MMJAX_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert _train(tmp_path / "run", "num_steps=1") == 0
    warnings = [m for m in caplog.messages if m.startswith("Cannot write the cache file")]
    assert len(warnings) == 2  # the train/val and the test archive
    assert warnings[0].startswith(f"Cannot write the cache file {tmp_path}/file/cache/omniglot_")
    assert warnings[0].endswith(
        f"(Not a directory: {tmp_path}/file/cache); going on without the cache. Set "
        "MMJAX_CACHE_DIR (or data.cache_dir) to a writable folder to keep the decoded arrays."
    )
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 1


def test_truncated_config_json_is_named_in_train_and_evaluate(run, capsys, monkeypatch):
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    monkeypatch.setattr(BUILD, lambda config: pytest.fail("built a run"))
    assert main(["evaluate", "--checkpoint", str(run)]) == 2
    line = _err_line(capsys)
    assert line.startswith(
        f"mmjax evaluate: error: {run}/config.json is not valid JSON (truncated or edited?): "
    )
    assert _train(run) == 2
    line = _err_line(capsys)
    assert line.startswith(f"mmjax train: error: {run}/config.json is not valid JSON")
    assert line.endswith(
        "pass --override to go on with the new one (recorded in config_history.jsonl)"
    )


def test_checkpoints_without_config_json_need_override(run, capsys):
    os.remove(run / "config.json")
    assert _train(run) == 2
    assert _err_line(capsys) == (
        f"mmjax train: error: {run} holds checkpoints but no config.json, so its config is "
        "unknown; resume with the run's config, use another --workdir, or pass --override to "
        "go on with the new one (recorded in config_history.jsonl)"
    )


MISSING_QUERIES = """
from mmjax.configs import quick

def get_config():
    config = quick.get_config()
    del config["queries"]
    return config
"""


@pytest.mark.parametrize(
    "source, message",
    [
        ("X = 1\n", "{path}: defines no get_config() returning a ConfigDict"),
        (
            "def get_config():\n    return {}\n",
            "{path}: get_config() returned dict, not a ConfigDict",
        ),
        (
            MISSING_QUERIES,
            (
                "{path}: required config key 'queries' is missing; start from a shipped config, "
                "e.g. mmjax.get_config('omniglot_maml_5w1s')"
            ),
        ),
        (None, "config file '{path}' not found"),
    ],
)
def test_bad_config_file_is_named(tmp_path, capsys, source, message):
    path = tmp_path / "my_config.py"
    if source is not None:
        path.write_text(source)
    assert main(["train", "--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
    assert _err_line(capsys) == "mmjax train: error: " + message.format(path=path)
    assert not (tmp_path / "w").exists()
