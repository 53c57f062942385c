"""Configs are dataclasses read from JSON: one recursive reader and writer for all of them.

:func:`from_dict` builds a dataclass from plain JSON data, driven by the field types: nested
dataclasses, ``X | None``, ``list[X]``, ``tuple[X, ...]`` and ``dict[str, X]`` are converted
recursively. Every config in the package rejects an unknown or misspelt key the same way, with a
:class:`ConfigError` naming the key by its dotted path (``qformer.hidden_sise``), so a typo never
falls back to a default silently. :func:`to_dict` is the inverse (``from_dict(C, to_dict(c)) == c``).
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

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration is malformed: unknown key, bad value, wrong type, or unknown preset."""


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_keys(cls: type, data: Any, where: str) -> None:
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
    if tp is Any or value is None:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        dataclass_options = [a for a in options if dataclasses.is_dataclass(a)]
        if dataclass_options and isinstance(value, dict):
            return from_dict(dataclass_options[0], value, where)
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
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
    reported with the section's dotted path.
    """
    check_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    kwargs = {key: _convert(hints.get(key, Any), value, _path(where, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
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


def load_json(cls: type[T], path: str | os.PathLike, where: str = "") -> T:
    """A config from a JSON file; a missing file or invalid JSON is a :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2) + "\n")
    tmp.replace(path)
    return path


def dataclass_from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Deprecated name of :func:`from_dict` (kept while callers move over)."""
    return from_dict(cls, data, where)
