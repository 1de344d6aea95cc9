"""metrics.jsonl survives a kill in the middle of a write: the torn record is skipped."""

import json

from mmjax.train.logging import MetricsWriter, read_metrics


def test_torn_last_record_is_closed_and_skipped(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write(1, "train", {"loss": 2.0})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "split": "train", "lo')  # killed here
    writer = MetricsWriter(tmp_path)  # the resumed run logs step 2 again
    writer.write(2, "train", {"loss": 1.5})
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {"step": 2, "split": "train", "loss": 1.5}
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [
        (1, 2.0),
        (2, 1.5),
    ]
