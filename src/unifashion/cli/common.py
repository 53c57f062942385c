"""What the command modules share: one-line error reports, model loading, and run configs that
come from a ``--config`` file with the flags given on the command line on top."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

MODEL_HELP = "a trained tag (tiny-default) or a folder written by save_pretrained"


def reports_errors(handler):
    """Run a command; an error about files, the index or the input is one line and exit status 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from unifashion.index import CatalogueIndexError

        try:
            return handler(args)
        except (OSError, CatalogueIndexError, RuntimeError) as exc:
            print(f"unifashion: error: {exc}", file=sys.stderr)
            return 2
    return run


def load_model(name: str):
    from unifashion.models import UniFashion

    return UniFashion.from_pretrained(name)


Flags = Mapping[str, str | tuple[str, Callable[[Any], Any]]]


def given_flags(args: argparse.Namespace, flags: Flags) -> dict[str, Any]:
    """The config values the command line sets: ``flags`` maps an option's dest to the dotted
    path of the config field it sets (or to ``(path, convert)``); options left at their default
    (None) set nothing."""
    values = {}
    for dest, target in flags.items():
        value = getattr(args, dest)
        if value is None:
            continue
        path, convert = (target, None) if isinstance(target, str) else target
        values[path] = convert(value) if convert else value
    return values


def prefixed(flags: Flags, section: str) -> dict[str, str | tuple[str, Callable[[Any], Any]]]:
    """``flags`` of a config that is the field ``section`` of a larger one."""
    return {dest: f"{section}.{t}" if isinstance(t, str) else (f"{section}.{t[0]}", t[1]) for dest, t in flags.items()}


def run_config(cls: type[T], path: str | None, overrides: Mapping[str, Any]) -> T:
    """The run's config: ``cls`` read from the JSON file ``path`` (its defaults without one), with
    ``overrides`` (dotted field path -> value) on top. An unknown key in the file, or a value the
    config rejects, is a :class:`~unifashion.configuration.ConfigError` naming it."""
    from unifashion.configuration import from_dict, load_json, set_dotted, to_dict

    data = to_dict(load_json(cls, path) if path else cls())
    for dotted, value in overrides.items():
        set_dotted(data, dotted, value)
    return from_dict(cls, data)


@dataclass(frozen=True)
class ConfigSpec:
    """How a long command's run config is made: the config class (``"module:Class"``, imported
    when the command runs, so that ``--help`` stays fast), the flags that set its fields (see
    :func:`given_flags`), ``extra(args)`` for the values no single flag sets (it may reject the
    input), and ``adjust(args, config)`` for what follows from the resolved config."""

    cls: str
    flags: Flags
    extra: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    adjust: Callable[[argparse.Namespace, Any], None] | None = None

    def config_class(self) -> type:
        import importlib

        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(module), name)


def add_config_option(parser: argparse.ArgumentParser, spec: ConfigSpec) -> None:
    """``--config FILE`` and ``--print-config`` for a command whose run is configured by ``spec``."""
    what = spec.cls.replace(":", ".")
    parser.add_argument("--config", metavar="FILE",
                        help=f"a JSON file of the run's config ({what}); the flags given here override its "
                             "values; the config the run used is written to run_config.json in its output folder")
    parser.add_argument("--print-config", action="store_true",
                        help="print the run's config (the file's or the defaults, with the flags given here) as "
                             "JSON and exit: every value a flag or the file can set, and its default")


def configured(spec: ConfigSpec):
    """Decorate ``handler(args, config)``: the command resolves its run config from ``--config``
    and the flags given (:func:`run_config`), prints it and stops for ``--print-config``, else
    calls the handler with it."""

    def wrap(handler: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            from unifashion.configuration import to_dict

            overrides = given_flags(args, spec.flags)
            if spec.extra is not None:
                overrides.update(spec.extra(args))
            config = run_config(spec.config_class(), args.config, overrides)
            if spec.adjust is not None:
                spec.adjust(args, config)
            if args.print_config:
                print(json.dumps(to_dict(config), indent=2))
                return 0
            return handler(args, config)
        return run
    return wrap


def add_device_flags(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """``--device``, ``--precision`` and ``--workers``, as ``train`` and ``eval`` take them."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"],
                        help="where to run (default: auto, a GPU when there is one); several GPUs or nodes: run "
                             "the same command under `accelerate launch`")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"],
                        help="mixed precision (autocast); fp16 needs a GPU (default: no)")
    if workers:
        parser.add_argument("--workers", type=int, help="data-loading processes (default: 0, in the main process)")
