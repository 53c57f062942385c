"""Configs are dataclasses read from JSON: one recursive reader and writer for all of them.

:func:`from_dict` builds a dataclass from plain JSON data, driven by the field types: nested
dataclasses, ``X | None``, ``list[X]``, ``tuple[X, ...]`` and ``dict[str, X]`` are converted
recursively. Every config in the package rejects an unknown or misspelt key the same way, with a
:class:`ConfigError` naming the key by its dotted path (``qformer.hidden_sise``; an item of a list
by its ``name`` when it has one, ``stages.phase2.loop.stepz``, else by its index, ``stages[1]``),
so a typo never falls back to a default silently. Keys a config does not have are a mistake;
keys it has that the data lacks take their defaults, so a file written before a field was added
still loads. :func:`to_dict` is the inverse (``from_dict(C, to_dict(c)) == c``); :func:`load_json`
and :func:`save_json` read and write files.

Config classes keep their ``from_dict`` / ``to_dict`` / ``load`` / ``save`` methods as one-line
calls to these functions, and validate their values in ``__post_init__`` by raising
:class:`ConfigError`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from unifashion.atomic import atomic_write

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration is malformed: unknown key, bad value, wrong type, or unknown preset."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """A config file that is not there (a :class:`ConfigError` and a :class:`FileNotFoundError`)."""


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _item_path(where: str, index: int, value: Any) -> str:
    """A list item's path: by its ``name`` when it has one (``stages.phase2``), else its index."""
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return _path(where, name) if isinstance(name, str) and name else f"{where}[{index}]"


def _check_keys(cls: type, data: Any, where: str) -> None:
    """Raise :class:`ConfigError` if ``data`` is not a dict or has a key ``cls`` does not define."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or '<root>'!r} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown config key {_path(where, key)!r}; known keys here: {sorted(known)}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` (JSON data) as the annotated type ``tp``; only containers and dataclasses are
    converted, scalars are passed through (a dataclass's ``__post_init__`` validates them)."""
    if value is None:
        return value
    if tp is Any:
        return copy.deepcopy(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:  # X | None
            return _convert(options[0], value, where)
        dataclass_options = [a for a in options if dataclasses.is_dataclass(a)]
        if dataclass_options and isinstance(value, dict):
            return from_dict(dataclass_options[0], value, where)
        return copy.deepcopy(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_convert(item, v, _item_path(where, i, v)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, _path(where, str(k))) for k, v in value.items()}
    return copy.deepcopy(value)


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """``cls`` built from JSON data; nested sections are converted by their field types.

    Missing keys take the dataclass defaults; unknown keys are a :class:`ConfigError`, as are
    values the dataclass rejects (a ``ValueError`` or ``TypeError`` from its ``__post_init__``),
    reported with the section's dotted path. ``data`` may also be a ``cls`` already (returned as is).
    """
    if isinstance(data, cls):
        return data
    _check_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    kwargs = {key: _convert(hints.get(key, Any), value, _path(where, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"config section {where!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section {where or '<root>'!r}: {exc}") from exc


def to_dict(config: Any) -> Any:
    """Plain JSON data of a config dataclass (recursively; tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, os.PathLike):
        return os.fspath(config)
    return copy.deepcopy(config)


def load_json(cls: type[T], path: str | os.PathLike, where: str = "", what: str = "config file") -> T:
    """A config from a JSON file; invalid JSON is a :class:`ConfigError` naming it, a missing file
    a :class:`ConfigFileNotFoundError` (``what`` names the kind of file in that message)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigFileNotFoundError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    return from_dict(cls, data, where)


def save_json(config: Any, path: str | os.PathLike) -> Path:
    """Write ``to_dict(config)`` as indented JSON (through a temporary file, so a crash never
    leaves half a config); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(to_dict(config), indent=2) + "\n")


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``; unknown sections raise."""
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {'.'.join(parts[: i + 1])!r} is not a config section")
        node = child
    node[parts[-1]] = value
