"""Test configuration: 8 forced host devices, the shared data, a private cache."""

import os
import tempfile

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault(
    "MMJAX_DATA_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")),
)
os.environ.setdefault("MMJAX_CACHE_DIR", tempfile.mkdtemp(prefix="mmjax-test-cache-"))
