"""Experiment configs (one ``get_config()`` module per experiment) and ``--set`` overrides."""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Sequence

import ml_collections

# Parameterised modules: ``get_config(arg)``, with the short names they generate in
# ``CONFIG_NAMES``; the names are listed instead of the module's own.
_PARAMETERISED = ("fewshot_images",)


def _generated() -> dict[str, str]:
    """Short config name -> the parameterised module that builds it."""
    return {
        name: module
        for module in _PARAMETERISED
        for name in importlib.import_module(f"mmjax.configs.{module}").CONFIG_NAMES
    }


def available_configs() -> list[str]:
    """Names of the configs shipped in ``mmjax/configs``."""
    modules = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted([m for m in modules if m not in _PARAMETERISED] + list(_generated()))


def get_config(name: str) -> ml_collections.ConfigDict:
    """Loads a shipped config by name, or a ``.py`` file defining ``get_config()``.

    A ``.py`` config may only use keys that some shipped config has, so a misspelt key is an
    error naming the closest valid key instead of a setting silently ignored.
    """
    if name.endswith(".py"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"config file {name!r} not found")
        spec = importlib.util.spec_from_file_location("mmjax_user_config", name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ValueError(f"{name}: defines no get_config() returning a ConfigDict")
        config = module.get_config()
        if not isinstance(config, ml_collections.ConfigDict):
            raise TypeError(
                f"{name}: get_config() returned {type(config).__name__}, not a ConfigDict"
            )
        _check_known_keys(config, source=name)
        _check_required_keys(config, source=name)
        return config
    names = available_configs()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown config {name!r}{hint} Available: {', '.join(names)}")
    generated = _generated()
    if name in generated:
        return importlib.import_module(f"mmjax.configs.{generated[name]}").get_config(name)
    return importlib.import_module(f"mmjax.configs.{name}").get_config()


def _check_known_keys(config: ml_collections.ConfigDict, *, source: str) -> None:
    """Raises ``ValueError`` for a key that no shipped config has (closest one suggested)."""
    shipped = (get_config(name) for name in available_configs())
    valid = sorted({key for other in shipped for key in _flat_keys(other)})
    for key in _flat_keys(config):
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{source}: unknown config key {key!r}{hint}")


# Keys of every shipped classification config that the trainer reads with a default (or only
# for another data source or encoder): a ``.py`` config may leave them out.
_OPTIONAL_KEYS = frozenset(
    {"data.background", "data.evaluation", "data.tfds_split", "data.tfds_examples_per_class"}
    | {"model.hidden_sizes"}
)


def _check_required_keys(config: ml_collections.ConfigDict, *, source: str) -> None:
    """Raises ``ValueError`` naming a key that every shipped classification config has.

    Regression configs (``num_modes``) are not checked: another trainer reads them.
    """
    if "num_modes" in config:
        return
    shipped = [set(_flat_keys(get_config(n))) for n in available_configs()]
    required = set.intersection(*[keys for keys in shipped if "ways" in keys]) - _OPTIONAL_KEYS
    missing = sorted(required - set(_flat_keys(config)))
    if missing:
        more = f" (and {', '.join(map(repr, missing[1:]))})" if missing[1:] else ""
        raise ValueError(
            f"{source}: required config key {missing[0]!r} is missing{more}; start from a "
            "shipped config, e.g. mmjax.configs.omniglot_maml_5w1s.get_config()"
        )


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, prefix + key + "."))
    return keys


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies ``key.sub=value`` strings (values parsed as Python literals).

    Unknown keys raise ``ValueError`` naming the closest valid key; a value of the wrong type
    raises ``TypeError`` naming the key and both types.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    valid = _flat_keys(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value; got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        old, new = node[leaf], _parse_value(text)
        if isinstance(old, bool) and not isinstance(new, bool):
            raise TypeError(f"config key {key!r} expects a bool (True/False); got {text!r}")
        if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
            new = float(new)
        if isinstance(old, str) and not isinstance(new, str):
            new = text
        if (
            old is not None
            and not isinstance(new, type(old))
            and not (isinstance(old, tuple) and isinstance(new, (list, tuple)))
        ):
            raise TypeError(
                f"config key {key!r} expects {type(old).__name__}; got {text!r} "
                f"({type(new).__name__})"
            )
        node[leaf] = tuple(new) if isinstance(old, tuple) else new
    return config
