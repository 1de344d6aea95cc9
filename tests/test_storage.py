"""mmjax.storage on a non-local file system: an in-memory ``s3://`` through epath's fsspec backend.

`cloud` registers fsspec's `MemoryFileSystem` under the ``s3`` protocol, so
``epath.Path("s3://bucket/run")`` takes the same code path as ``gs://`` on a TPU VM (epath's
fsspec backend; gcsfs there) without a network. Orbax cannot checkpoint there: it writes the
arrays with tensorstore, whose ``s3`` driver would contact AWS (tensorstore has no fsspec
driver), so the trainer test maps only ``<workdir>/checkpoints`` to a local folder
(`checkpoint.checkpoint_directory`) and every other file stays on the in-memory store.
"""

import json

import fsspec
import numpy as np
import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem

from mmjax import configs, storage
from mmjax.data import archives
from mmjax.train import checkpoint, loop
from mmjax.train import workdir as workdirs
from mmjax.train.logging import read_metrics
from mmjax.train.restore import evaluate_checkpoint


class _MemoryS3(MemoryFileSystem):
    """fsspec's in-memory file system answering ``s3://`` URLs (a store of its own)."""

    protocol = ("s3",)
    store: dict = {}  # noqa: RUF012 - fsspec shares it across instances, as its parent
    pseudo_dirs = [""]  # noqa: RUF012

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("s3://"))


@pytest.fixture
def cloud():
    """The in-memory ``s3://`` store, emptied before and after the test."""
    fsspec.register_implementation("s3", _MemoryS3, clobber=True)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    _MemoryS3.store.clear()
    _MemoryS3.pseudo_dirs[:] = [""]
    yield _MemoryS3()
    _MemoryS3.store.clear()
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


def test_paths_are_local_or_cloud():
    assert storage.is_local("/tmp/run") and storage.is_local("run")
    assert not storage.is_local("gs://bucket/run") and not storage.is_local("s3://b/r")
    assert storage.join("gs://bucket/run", "config.json") == "gs://bucket/run/config.json"
    assert storage.has_atomic_rename("/tmp") and not storage.has_atomic_rename("gs://b")


def test_cloud_write_is_committed_by_its_marker(cloud):
    path = "s3://bucket/run/results.json"
    storage.write_text(path, '{"a": 1}')
    assert cloud.exists("bucket/run/results.json") and cloud.exists(
        "bucket/run/results.json.commit"
    )
    assert storage.read_text(path) == '{"a": 1}' and storage.exists(path)
    # A write cut off after the data (the marker of other content): uncommitted, so absent.
    with cloud.open("bucket/run/results.json", "wb") as f:
        f.write(b'{"a": 2')
    assert not storage.exists(path)
    with pytest.raises(FileNotFoundError, match="not committed"):
        storage.read_text(path)
    # A file without a marker (the marker deleted first, the write then killed): absent too.
    storage.write_text(path, '{"a": 3}')
    cloud.rm("bucket/run/results.json.commit")
    assert not storage.exists(path)
    storage.write_text(path, '{"a": 4}')  # the next write commits again
    assert json.loads(storage.read_text(path)) == {"a": 4}
    storage.append_text(path, "\nmore")
    assert storage.read_text(path) == '{"a": 4}\nmore'
    storage.remove(path)
    assert not cloud.exists("bucket/run/results.json") and not storage.exists(path)


def test_local_write_is_a_rename_and_leaves_no_temporary(tmp_path):
    storage.write_bytes(tmp_path / "x.bin", b"abc")
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no marker, no .tmp left


def test_data_cache_on_cloud_storage(cloud):
    folder = archives.cache_dir("s3://bucket/cache")
    path = archives.cache_file("k", "m", "s3://bucket/cache", v=1)
    assert str(path).startswith("s3://bucket/cache/") and str(folder) == "s3://bucket/cache"
    assert archives.load_npz(path) is None
    archives.atomic_save_npz(path, x=np.arange(5))
    np.testing.assert_array_equal(archives.load_npz(path, ("x",))["x"], np.arange(5))
    with cloud.open(str(path).removeprefix("s3://"), "wb") as f:  # torn: ignored, rebuilt
        f.write(b"PK")
    assert archives.load_npz(path) is None


def test_cloud_lock_refuses_a_second_trainer(cloud, monkeypatch):
    monkeypatch.setattr(workdirs, "CLOUD_LOCK_SETTLE_S", 0.0)
    lock = workdirs.acquire_lock("s3://bucket/run")
    holder = json.loads(storage.read_text("s3://bucket/run/train.lock"))
    assert holder["token"] == lock.holder["token"]
    monkeypatch.setattr(workdirs, "_is_stale", lambda holder: False)  # as if another host
    with pytest.raises(workdirs.WorkdirLockedError, match="in use by another mmjax train"):
        workdirs.acquire_lock("s3://bucket/run")
    lock.release()
    assert not storage.exists("s3://bucket/run/train.lock")
    workdirs.acquire_lock("s3://bucket/run").release()


# The tiny run of tests/train/conftest.py (seconds to compile and run), a checkpoint every
# 2 steps.
TINY = [
    "model.features=4",
    "maml.first_order=True",
    "meta_batch_size=2",
    "queries=1",
    "checkpoint_every=2",
    "log_every=1",
    "eval_every=1000",
    "val_episodes=2",
    "test_episodes=4",
    "eval_batch_size=2",
]


def test_train_resume_and_evaluate_with_the_workdir_on_cloud_storage(cloud, tmp_path, monkeypatch):
    local_checkpoints = tmp_path / "checkpoints"
    monkeypatch.setattr(checkpoint, "checkpoint_directory", lambda workdir: str(local_checkpoints))
    monkeypatch.setattr(workdirs, "CLOUD_LOCK_SETTLE_S", 0.0)
    workdir = "s3://bucket/run"
    config = configs.apply_overrides(configs.get_config("quick"), TINY + ["num_steps=4"])
    first = loop.train(config, workdir, progress=False)
    assert first["steps"] == 4
    for name in ("config.json", "metrics.jsonl", "results.json", "learning_curve.png"):
        assert storage.exists(f"{workdir}/{name}"), name
        assert cloud.exists(f"bucket/run/{name}.commit"), name  # committed by its marker
    events = [p for p in cloud.find("bucket/run/tensorboard") if "events.out.tfevents" in p]
    assert events, cloud.find("bucket/run")
    assert not storage.exists(f"{workdir}/train.lock")  # released
    assert sorted(p.name for p in local_checkpoints.iterdir()) == ["2", "4"]

    # Resume: num_steps may grow without --override; the run goes on from step 4.
    more = configs.apply_overrides(configs.get_config("quick"), TINY + ["num_steps=6"])
    second = loop.train(more, workdir, progress=False)
    assert second["steps"] == 6
    history = [
        json.loads(line)
        for line in storage.read_text(f"{workdir}/config_history.jsonl").splitlines()
    ]
    assert history[-1]["step"] == 4 and history[-1]["changes"] == {"num_steps": [4, 6]}
    train_steps = [
        r["step"] for r in read_metrics(f"{workdir}/metrics.jsonl") if r["split"] == "train"
    ]
    assert train_steps == [1, 2, 3, 4, 5, 6]  # appended across the resume
    assert json.loads(storage.read_text(f"{workdir}/results.json"))["steps"] == 6

    again = evaluate_checkpoint(workdir, num_episodes=4)
    assert again["step"] == 6
    np.testing.assert_allclose(again["accuracy"], second["test_accuracy"], rtol=1e-6)
