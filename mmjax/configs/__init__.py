"""Experiment configs by name, big_vision style: ``get_config("module:key=value,...")``.

Modules: `omniglot` (every Omniglot experiment), `fewshot_images` (mini-ImageNet and the
other image benchmarks), `regression` (the MMAML regression protocol), each a
``get_config(arg)`` over its keys, and `quick` (the README's run); `defaults` is the table of
each algorithm's paper defaults they all read. A name is a short name of `available_configs`
(``omniglot_maml_5w1s``), ``<module>:<arg>`` (``omniglot:algorithm=anil,ways=20``), or a
``.py`` file defining ``get_config()``; ``--set`` overrides go through `apply_overrides`.
See docs/configs.md for the grammar.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
from collections.abc import Mapping, Sequence

import ml_collections

# Parameterised modules: ``get_config(arg)``, with the short names they build in
# ``CONFIG_NAMES``; plain modules: ``get_config()``, listed by their own name.
PARAMETERISED = ("omniglot", "fewshot_images", "regression")
_PLAIN = ("quick",)


def _closest(word: str, options: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _strict_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{text!r} is not True or False")
    return text.lower() == "true"


def parse_arg(
    arg: str | None,
    *,
    source: str = "config",
    choices: Mapping[str, Sequence] | None = None,
    **spec,
) -> ml_collections.ConfigDict:
    """Parses ``"key=value,key=value"`` over ``spec`` (big_vision's ``parse_arg``).

    Args:
      arg: the string after ``module:``; ``None`` or ``""`` gives every default. A bare
        ``key`` sets a bool key to True; a bare value alone is the first key's value.
      source: the name errors start with (the config module).
      choices: ``key -> allowed values`` (checked after conversion).
      **spec: each key and its default; the default's type (bool, int, float, str) converts
        the text.

    Returns:
      A ConfigDict with every key of ``spec``.

    Raises:
      ValueError: an unknown or repeated key, a value that does not convert, or one outside
        ``choices``; the message names the key, the allowed values and the closest match.
    """
    choices = dict(choices or {})
    result = dict(spec)
    items = [item for item in (arg or "").split(",") if item.strip()]
    seen = set()
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep:
            if key in spec and isinstance(spec[key], bool):
                text = "True"
            elif len(items) == 1 and spec:
                key, text = next(iter(spec)), key
            else:
                raise ValueError(f"{source}: expected key=value; got {item!r}")
        if key not in spec:
            raise ValueError(
                f"{source}: unknown key {key!r}{_closest(key, list(spec))} Keys: {', '.join(spec)}"
            )
        if key in seen:
            raise ValueError(f"{source}: key {key!r} given twice in {arg!r}")
        seen.add(key)
        default = spec[key]
        convert = _strict_bool if isinstance(default, bool) else type(default)
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(
                f"{source}: key {key!r} expects {type(default).__name__}; got {text!r}"
            ) from None
        result[key] = value
    for key, allowed in choices.items():
        if result[key] not in tuple(allowed):
            raise ValueError(
                f"{source}: {key}={result[key]!r} is not one of {tuple(allowed)}"
                f"{_closest(result[key], allowed)}"
            )
    return ml_collections.ConfigDict(result)


def pack_arg(**values) -> str:
    """The ``arg`` string `parse_arg` reads back as ``values``."""
    return ",".join(f"{key}={value}" for key, value in values.items())


def _module(name: str):
    return importlib.import_module(f"mmjax.configs.{name}")


def _registry() -> dict[str, str]:
    """Short config name -> the module that builds it."""
    names = {name: name for name in _PLAIN}
    for module in PARAMETERISED:
        names.update(dict.fromkeys(_module(module).CONFIG_NAMES, module))
    return names


def available_configs() -> list[str]:
    """Short names of the shipped configs (each module also takes ``<module>:<arg>``)."""
    return sorted(_registry())


def get_config(name: str) -> ml_collections.ConfigDict:
    """Loads a shipped config: a short name, ``"<module>:<arg>"``, or a ``.py`` file.

    A ``.py`` config (defining ``get_config()``) may only use keys that some shipped config
    has, so a misspelt key is an error naming the closest valid key instead of a setting
    silently ignored.
    """
    if name.endswith(".py"):
        return _load_file(name)
    module, sep, arg = name.partition(":")
    if sep or module in PARAMETERISED:
        if module not in PARAMETERISED:
            raise ValueError(
                f"unknown config module {module!r}{_closest(module, PARAMETERISED)} "
                f"Modules taking an argument: {', '.join(PARAMETERISED)}"
            )
        return _module(module).get_config(arg or None)
    registry = _registry()
    if name not in registry:
        raise ValueError(
            f"unknown config {name!r}{_closest(name, list(registry))} "
            f"Available: {', '.join(sorted(registry))}, or <module>:<key=value,...> with a "
            f"module of {PARAMETERISED}"
        )
    if registry[name] in PARAMETERISED:
        return _module(registry[name]).get_config(name)
    return _module(name).get_config()


def _load_file(name: str) -> ml_collections.ConfigDict:
    """A user ``.py`` config, checked against the shipped keys."""
    if not os.path.isfile(name):
        raise FileNotFoundError(f"config file {name!r} not found")
    spec = importlib.util.spec_from_file_location("mmjax_user_config", name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{name}: defines no get_config() returning a ConfigDict")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"{name}: get_config() returned {type(config).__name__}, not a ConfigDict")
    _check_known_keys(config, source=name)
    _check_required_keys(config, source=name)
    return config


def _check_known_keys(config: ml_collections.ConfigDict, *, source: str) -> None:
    """Raises ``ValueError`` for a key that no shipped config has (closest one suggested)."""
    shipped = (get_config(name) for name in available_configs())
    valid = sorted({key for other in shipped for key in _flat_keys(other)})
    for key in _flat_keys(config):
        if key not in valid:
            raise ValueError(f"{source}: unknown config key {key!r}{_closest(key, valid)}")


# Keys of every shipped classification config that the trainer reads with a default (or only
# for another data source or encoder): a ``.py`` config may leave them out.
_OPTIONAL_KEYS = frozenset(
    {"data.background", "data.evaluation", "data.tfds_split", "data.tfds_examples_per_class"}
    | {"model.hidden_sizes"}
)


def _is_regression(config: ml_collections.ConfigDict) -> bool:
    data = config.get("data")
    return isinstance(data, ml_collections.ConfigDict) and data.get("name") == "regression"


def _check_required_keys(config: ml_collections.ConfigDict, *, source: str) -> None:
    """Raises ``ValueError`` naming a key that every shipped config of the same kind has.

    The kinds are classification and regression (``data.name="regression"``).
    """
    kind = _is_regression(config)
    shipped = [get_config(n) for n in available_configs()]
    keys = [set(_flat_keys(c)) for c in shipped if _is_regression(c) == kind]
    required = set.intersection(*keys) - (set() if kind else _OPTIONAL_KEYS)
    missing = sorted(required - set(_flat_keys(config)))
    if missing:
        more = f" (and {', '.join(map(repr, missing[1:]))})" if missing[1:] else ""
        raise ValueError(
            f"{source}: required config key {missing[0]!r} is missing{more}; start from a "
            "shipped config, e.g. mmjax.get_config('omniglot_maml_5w1s')"
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
            raise ValueError(f"unknown config key {key!r}{_closest(key, valid)}")
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
