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
    from unifashion.data.errors import DatasetError

    try:
        return args.func(args)
    except (DatasetError, ValueError) as exc:
        print(f"unifashion: error: {exc}", file=sys.stderr)
        return 2
