"""Configs are dataclasses read from JSON; one reader for all of them, so every config in the
package rejects an unknown or misspelt key the same way, naming it and where it stood."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration is malformed: unknown key, bad value, or unknown preset."""


def check_keys(cls: type, data: Any, where: str) -> None:
    """Raise :class:`ConfigError` if ``data`` is not a dict or has a key ``cls`` does not define."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or '<root>'!r} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            path = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown config key {path!r}; known keys here: {sorted(known)}")


def dataclass_from_dict(cls: type, data: dict[str, Any], where: str):
    """``cls(**data)`` after :func:`check_keys` (nested sections are the caller's to convert)."""
    check_keys(cls, data, where)
    return cls(**copy.deepcopy(data))
