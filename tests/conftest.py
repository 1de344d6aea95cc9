"""Test configuration: 8 forced host devices and float64 available where asked."""
import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("MMJAX_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
