"""The trainer on real Omniglot: it learns, resumes exactly after kill -9, guards NaNs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mmjax import configs
from mmjax.train import loop
from mmjax.train.restore import evaluate_checkpoint, load_run
from tests.conftest import full_optimisation

TINY = [
    "model.features=16",
    "maml.first_order=True",
    "meta_batch_size=4",
    "queries=3",
    "num_steps=40",
    "checkpoint_every=10",
    "log_every=10",
    "eval_every=1000",
    "test_episodes=20",
    "eval_batch_size=10",
    "val_episodes=10",
]


def tiny_config(*extra):
    return configs.apply_overrides(configs.get_config("quick"), TINY + list(extra))


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("learned")
    config = configs.apply_overrides(
        configs.get_config("quick"),
        [
            "num_steps=150",
            "log_every=25",
            "eval_every=150",
            "checkpoint_every=150",
            "val_episodes=50",
            "test_episodes=100",
        ],
    )
    with full_optimisation():  # 150 meta-steps: the full optimisation pays (tests/conftest.py)
        return workdir, loop.train(config, workdir, progress=False)


@pytest.mark.slow
def test_short_run_on_real_omniglot_learns(learned_run):
    workdir, results = learned_run
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [25, 50, 75, 100, 125, 150]
    assert train[-1]["loss"] < 0.85 * train[0]["loss"]
    # 5-way chance is 0.2; the 95% CI must sit clearly above it on unseen alphabets.
    assert results["test_accuracy"] - results["test_accuracy_ci95"] > 0.35
    assert results["test_episodes"] == 100 and results["steps"] == 150
    for name in ("results.json", "learning_curve.png", "config.json"):
        assert (workdir / name).stat().st_size > 0
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))


@pytest.mark.slow
@pytest.mark.usefixtures("full_opt")  # compiled as the run's own evaluation was
def test_evaluate_checkpoint_reproduces_final_test_accuracy(learned_run):
    workdir, results = learned_run
    again = evaluate_checkpoint(workdir, num_episodes=100)
    assert again["step"] == 150
    np.testing.assert_allclose(again["accuracy"], results["test_accuracy"], rtol=1e-6)


def _cli(workdir, *extra):
    args = [
        sys.executable,
        "-m",
        "mmjax.cli",
        "train",
        "--config",
        "quick",
        "--no_progress",
        "--workdir",
        str(workdir),
    ]
    for item in TINY + list(extra):
        args += ["--set", item]
    return args


def _params(workdir):
    return jax.device_get(load_run(workdir)[3].params)


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cli(full), check=True, capture_output=True)
    process = subprocess.Popen(_cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "10").exists():
        assert process.poll() is None and time.time() < deadline, (
            "run ended before its first checkpoint"
        )
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(_cli(killed), check=True, capture_output=True, text=True)
    assert "Resumed from" in resumed.stdout
    a, b = json.load(open(full / "results.json")), json.load(open(killed / "results.json"))
    assert a == b
    jax.tree.map(np.testing.assert_array_equal, _params(full), _params(killed))


@pytest.mark.slow
def test_sigterm_saves_and_resume_equals_uninterrupted_run(tmp_path):
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    loop.train(tiny_config("num_steps=20"), full, progress=False)
    process = subprocess.Popen(
        _cli(stopped, "num_steps=20", "checkpoint_every=1000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while not (stopped / "metrics.jsonl").exists() or not open(stopped / "metrics.jsonl").read():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate()
    assert process.returncode == 0, out
    assert "SIGTERM received: checkpoint saved at step" in out
    assert not (stopped / "results.json").exists()
    loop.train(tiny_config("num_steps=20", "checkpoint_every=1000"), stopped, progress=False)
    assert json.load(open(full / "results.json")) == json.load(open(stopped / "results.json"))
    jax.tree.map(np.testing.assert_array_equal, _params(full), _params(stopped))


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop.make_train_step

    def poisoned(config, loss_fn, optimizer):  # reports a NaN loss from step 5 on
        step = real(config, loss_fn, optimizer)

        def wrapped(state, data):
            state, metrics = step(state, data)
            if int(state.step) >= 5:
                metrics = dict(metrics, loss=np.float32("nan"), finite=np.bool_(False))
            return state, metrics

        return wrapped

    monkeypatch.setattr(loop, "make_train_step", poisoned)
    with pytest.raises(
        loop.NonFiniteLossError,
        match=r"\(nan\) or gradient at step 5; stopping\. The last good checkpoint \(step 4\)",
    ):
        loop.train(tiny_config("checkpoint_every=2"), tmp_path, progress=False)
    state = load_run(tmp_path)[3]
    assert int(state.step) == 4
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_real_divergence_stops_before_any_checkpoint(tmp_path):
    with pytest.raises(
        loop.NonFiniteLossError, match="at step 2; stopping. No checkpoint had been saved yet"
    ):
        # Adam at lr 1e20 puts parameters near 1e20 after one step; the next forward pass
        # overflows float32. (At 1e12 batch norm normalises the huge activations away and its
        # closed-form backward pass stays finite, so nothing diverges.)
        loop.train(tiny_config("optimizer.learning_rate=1e20"), tmp_path, progress=False)
    assert not os.listdir(tmp_path / "checkpoints")


def test_nan_policy_skip_keeps_parameters_finite(tmp_path):
    config = tiny_config(
        "num_steps=12", "checkpoint_every=1000", "optimizer.learning_rate=1e20", "nan_policy='skip'"
    )
    results = loop.train(config, tmp_path, progress=False)
    assert results["skipped_steps"] > 0
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(_params(tmp_path)))


def test_sharded_trainer_equals_single_device(tmp_path):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    # SGD, not Adam: a conv bias before batch norm has a zero true gradient, and Adam's
    # normalised step would turn its float noise (which depends on summation order) into ±lr.
    settings = (
        "num_steps=3",
        "meta_batch_size=8",
        "optimizer.name='sgd'",
        "optimizer.learning_rate=0.5",
    )
    a = loop.train(tiny_config(*settings), tmp_path / "a", progress=False)
    b = loop.train(tiny_config(*settings, "parallel='sharded'"), tmp_path / "b", progress=False)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-5),
        _params(tmp_path / "a"),
        _params(tmp_path / "b"),
    )
    assert abs(a["test_accuracy"] - b["test_accuracy"]) < 0.05


@pytest.mark.parametrize(
    "override, message",
    [
        ("ways=200", "ways=200 exceeds"),
        ("shots=19", "exceeds the 20 examples per class"),
        ("meta_batch_size=0", "config.meta_batch_size must be an int >= 1; got 0"),
        ("maml.inner_lr=-1.0", "config.maml: inner_lr must be > 0; got -1.0"),
        ("parallel='pjit'", "config.parallel='pjit' is not one of"),
        ("model.encoder='resnet'", "model.encoder='resnet' is not one of"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        loop.train(tiny_config(override), tmp_path, progress=False)


def test_cli_reports_unknown_key_with_suggestion(tmp_path, capsys):
    from mmjax.cli import main

    assert main(["train", "--workdir", str(tmp_path), "--set", "maml.inner_lrr=0.1"]) == 2
    assert (
        "unknown config key 'maml.inner_lrr'; did you mean 'maml.inner_lr'?"
        in capsys.readouterr().err
    )
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_missing_data_dir_says_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="MMJAX_DATA_DIR"):
        loop.train(tiny_config(f"data.data_dir='{tmp_path}'"), tmp_path / "w", progress=False)


def test_a_regression_config_is_trained_by_the_regression_trainer(tmp_path):
    """One schema: ``train`` hands a regression config to ``mmjax.train.regression``."""
    import json

    from mmjax.train import builders, regression

    config = configs.apply_overrides(
        configs.get_config("regression_2modes_5shot"),
        ["num_steps=4", "log_every=2", "meta_batch_size=2", "eval_tasks_per_mode=3",
         "model.hidden_sizes=(8,)", "mmaml.task_hidden_sizes=(4,)", "mmaml.num_inner_steps=1",
         "mmaml.eval_num_inner_steps=1"],
    )  # fmt: skip
    results = loop.train(config, tmp_path, progress=False)
    direct = regression.run_regression(builders.regression_settings(config))
    assert results == direct  # same seed, same calls: the same numbers
    assert (results["method"], results["num_modes"], len(results["train_losses"])) == ("mmaml", 2, 2)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert json.loads((tmp_path / "config.json").read_text())["data"]["num_modes"] == 2


@pytest.mark.slow
def test_same_seed_and_config_give_bit_identical_runs_in_two_processes(tmp_path, reference_run):
    from mmjax.train.logging import read_metrics
    from tests.train.conftest import run_cli

    run_cli(tmp_path / "again")  # a fresh process that compiles everything itself
    timing = {"step_time", "tasks_per_second", "window_seconds", "host_peak_rss_bytes"}
    records = [
        [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(w / "metrics.jsonl")]
        for w in (reference_run, tmp_path / "again")
    ]
    assert [r["step"] for r in records[0] if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert records[0] == records[1]  # every logged loss and accuracy, to the last bit
    assert json.load(open(reference_run / "results.json")) == json.load(
        open(tmp_path / "again" / "results.json")
    )
    jax.tree.map(np.testing.assert_array_equal, _params(reference_run), _params(tmp_path / "again"))
