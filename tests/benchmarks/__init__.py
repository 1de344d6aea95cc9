"""Smoke tests of the scripts in ``benchmarks/`` (loaded from their files, not installed)."""

import importlib.util
import os
from types import ModuleType

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


def load_benchmark(name: str) -> ModuleType:
    """Imports ``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
