"""Every public function, class and method of mmjax has a docstring; array APIs give shapes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import mmjax

# Packages whose __all__ is the public API.
PACKAGES = (
    "mmjax",
    "mmjax.configs",
    "mmjax.data",
    "mmjax.fusion",
    "mmjax.meta",
    "mmjax.nn",
    "mmjax.representation",
    "mmjax.train",
)
# Flax's `setup` is a framework hook, documented by Flax.
FRAMEWORK_HOOKS = {"setup"}


def _modules() -> list[str]:
    """Every module of the package."""
    names, todo = [], [("mmjax", mmjax.__path__)]
    while todo:
        prefix, path = todo.pop()
        for info in pkgutil.iter_modules(path, prefix + "."):
            names.append(info.name)
            if info.ispkg:
                todo.append((info.name, importlib.import_module(info.name).__path__))
    return sorted(names)


def _own_doc(obj) -> str:
    """The object's own docstring: not inherited, not the one dataclasses make up."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        return "" if doc.startswith(obj.__name__ + "(") else doc.strip()
    return (inspect.getdoc(obj) or "").strip()


def _public_definitions(module_name: str):
    """(qualified name, object) of public functions/classes defined in the module and the
    public methods and properties those classes define."""
    module = importlib.import_module(module_name)
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        yield f"{module_name}.{name}", obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or attr in FRAMEWORK_HOOKS:
                    continue
                function = member.fget if isinstance(member, property) else member
                function = getattr(function, "__func__", function)
                if inspect.isfunction(function):
                    yield f"{module_name}.{name}.{attr}", function


def _is_experiment_config(module_name: str) -> bool:
    return module_name.startswith("mmjax.configs.")


MODULES = _modules()


def test_the_audit_sees_the_whole_package():
    for expected in ("mmjax.meta.maml", "mmjax.fusion.attention", "mmjax.train.loop", "mmjax.cli",
                     "mmjax.representation.vae"):
        assert expected in MODULES


@pytest.mark.parametrize("module_name", MODULES)
def test_module_and_public_definitions_have_docstrings(module_name):
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"module {module_name} has no docstring"
    if _is_experiment_config(module_name):
        return  # get_config() of an experiment: the module docstring describes it
    missing = [name for name, obj in _public_definitions(module_name) if not _own_doc(obj)]
    assert not missing, f"public definitions without a docstring: {missing}"


def _exported():
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if callable(obj) and not inspect.ismodule(obj):
                yield f"{package}.{name}", obj


EXPORTED = sorted(dict(_exported()).items())


def test_exports_are_found():
    names = {name for name, _ in EXPORTED}
    expected = {"mmjax.adapt", "mmjax.make_step", "mmjax.fusion.make_fusion"}
    assert expected <= names
    assert len(EXPORTED) > 100


@pytest.mark.parametrize("name,obj", EXPORTED, ids=[name for name, _ in EXPORTED])
def test_exported_callable_is_documented_with_shapes(name, obj):
    doc = _own_doc(obj)
    assert len(doc) >= 20, f"{name}: missing or one-word docstring {doc!r}"
    if not inspect.isfunction(obj):
        return
    target = f"{obj.__module__}.{obj.__qualname__}"
    annotations = " ".join(str(p.annotation) for p in inspect.signature(obj).parameters.values())
    annotations += str(inspect.signature(obj).return_annotation)
    if "Array" in annotations:
        # Google style with shapes: `x: [batch, height, width, channels]`.
        assert "[" in doc, f"{name} ({target}) takes or returns arrays; give their shapes"
