"""Throughput and memory in the trainer's metrics and progress line (mmjax.train.throughput)."""

import json
import time

import jax
import pytest
from tqdm.auto import tqdm

from mmjax import configs
from mmjax.train import loop, throughput


class _Device:
    def __init__(self, stats):
        self._stats = stats

    def memory_stats(self):
        return self._stats


def test_device_peak_is_the_largest_over_local_devices(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    devices = [
        _Device({"peak_bytes_in_use": 5, "bytes_in_use": 1}),
        _Device({"peak_bytes_in_use": 7}),
    ]
    monkeypatch.setattr(jax, "local_devices", lambda: devices)
    assert throughput.device_peak_bytes() == 7
    assert throughput.memory_fields() == {"device_peak_bytes": 7}
    monkeypatch.setattr(jax, "local_devices", lambda: [_Device(None)])  # backend reports none
    assert throughput.device_peak_bytes() is None


def test_cpu_reports_host_peak_rss_not_device_memory():
    assert jax.default_backend() == "cpu"
    assert throughput.device_peak_bytes() is None
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    fields = throughput.memory_fields()
    assert list(fields) == ["host_peak_rss_bytes"]
    # The kernel's RSS high-water mark through /proc: getrusage's copy of it is refreshed
    # lazily (page-fault accounting), so the two agree to a few pages, not to the byte.
    high_water = int(status["VmHWM"].split()[0]) * 1024
    assert abs(fields["host_peak_rss_bytes"] - high_water) < 0.01 * high_water


def test_tasks_per_second_refuses_an_empty_window():
    assert throughput.tasks_per_second(4, 3, 2.0) == 6.0
    with pytest.raises(ValueError, match="seconds > 0"):
        throughput.tasks_per_second(4, 3, 0.0)


def test_progress_line_and_metrics_carry_tasks_per_second_and_memory(tmp_path, monkeypatch):
    postfixes = []

    class Bar(tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            postfixes.append(dict(ordered_dict or kwargs))
            super().set_postfix(ordered_dict, refresh, **kwargs)

    monkeypatch.setattr(loop, "tqdm", Bar)
    config = configs.apply_overrides(
        configs.get_config("quick"),
        [
            "model.features=4",
            "maml.first_order=True",
            "meta_batch_size=2",
            "queries=1",
            "num_steps=4",
            "log_every=2",
            "checkpoint_every=4",
            "eval_every=1000",
            "val_episodes=2",
            "test_episodes=4",
            "eval_batch_size=2",
        ],
    )
    start = time.perf_counter()
    loop.train(config, tmp_path, progress=False)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4] and len(postfixes) == 2
    for record, postfix in zip(train, postfixes):
        assert record["window_steps"] == 2
        assert 0 < record["window_seconds"] < wall
        # tasks/s = meta_batch * steps / elapsed, from the logged (float64-exact) values.
        expected = config.meta_batch_size * record["window_steps"] / record["window_seconds"]
        assert record["tasks_per_second"] == pytest.approx(expected, rel=1e-12)
        assert "device_peak_bytes" not in record  # CPU: no device memory stats
        assert record["host_peak_rss_bytes"] > 0
        # The progress line shows the logged values at their stated rounding.
        assert postfix["tasks/s"] == f"{record['tasks_per_second']:.1f}"
        assert postfix["host_rss"] == f"{record['host_peak_rss_bytes'] / 2**30:.2f}GiB"
        assert postfix["loss"] == f"{record['loss']:.3f}"
    assert train[0]["host_peak_rss_bytes"] <= train[1]["host_peak_rss_bytes"]  # a peak
