"""The ``unifashion`` command line.

One module per command group, each registering its commands on the parser: :mod:`.demo` (the
README's main job), :mod:`.data` (catalogues and datasets), :mod:`.train` (the model and the
baseline), :mod:`.evaluate` (evaluation, merging results), :mod:`.search` (index, search, serve),
:mod:`.generate` (caption, generate, the try-on run) and :mod:`.cir` (triplet mining and the
two-stage CIR recipe). Commands are thin: they parse, call a library function and print. The
long runs (train, train-baseline, eval, cir-train, cir-recipe, tryon) take ``--config FILE``, a
JSON of the run's config, with the flags given on the command line on top.
"""

from __future__ import annotations

import argparse
import sys

from unifashion import __version__
from unifashion.cli import cir, data, demo, evaluate, generate, search, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifashion", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"unifashion {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (demo, train, evaluate, search, generate, cir, data):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    # Nothing is ever downloaded; and the per-checkpoint "Loading weights" bars are noise here.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from unifashion.data.heap import bound_heap_growth

    bound_heap_growth()  # long runs: resident memory must not grow with the number of batches
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("unifashion: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every error reaches the user as one line; --debug shows where it came from
        if args.debug:
            raise
        print(f"unifashion: error: {error_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 2


def error_line(exc: BaseException) -> str:
    """One line for ``exc``: its message (its type where the message alone would not say it)."""
    from unifashion.data.errors import DatasetError

    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (DatasetError, ValueError, FileNotFoundError)) or type(exc).__module__.startswith("unifashion"):
        return message
    return f"{type(exc).__name__}: {message}"
