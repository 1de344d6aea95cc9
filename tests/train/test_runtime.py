"""runtime_summary: the backend and what conv_impl / task_batching resolve to."""

import jax
import pytest

from mmjax.train import runtime_summary


def test_summary_names_backend_and_resolved_settings():
    line = runtime_summary()
    backend = jax.default_backend()
    assert line.startswith("runtime: local, backend ") and f"backend {backend} (" in line
    conv = "'im2col'" if backend == "cpu" else "'lax'"
    assert f"conv_impl 'auto' -> {conv}" in line
    batching = "'scan'" if backend == "cpu" and jax.device_count() == 1 else "'vmap'"
    assert f"task_batching 'auto' -> {batching}" in line
    assert "task_batching 8 -> 8" in runtime_summary(task_batching=8)
    assert "conv_impl 'lax' -> 'lax'" in runtime_summary(conv_impl="lax")


def test_summary_refuses_unknown_settings():
    with pytest.raises(ValueError, match="conv_impl"):
        runtime_summary(conv_impl="fft")
