"""The ``unifashion`` command line.

Commands are grouped as the package is: ``data`` (catalogues and datasets) now; model, training,
evaluation and serving commands join as they land. ``demo`` is the README's main job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from unifashion import __version__


def _cmd_data_build(args: argparse.Namespace) -> int:
    from unifashion.data.catalogue import CatalogueConfig, build_catalogue_files

    config = CatalogueConfig(n_items=args.n_items, image_size=args.size, seed=args.seed,
                             categories=tuple(args.categories) if args.categories else CatalogueConfig().categories)
    start = time.perf_counter()
    catalogue = build_catalogue_files(args.out, config, workers=args.workers)
    seconds = time.perf_counter() - start
    print(f"wrote {len(catalogue.items)} items and {len(catalogue.triplets)} triplets to {args.out} "
          f"in {seconds:.1f} s ({len(catalogue.items) / seconds:.0f} items/s)")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from unifashion.data.catalogue import load_catalogue
    from unifashion.data.contact_sheet import catalogue_contact_sheet

    out = args.out or Path(args.catalogue) / "contact_sheet.png"
    path = catalogue_contact_sheet(load_catalogue(args.catalogue), out, n_items=args.n_items,
                                   n_triplets=args.n_triplets, style=args.style)
    print(f"contact sheet: {path}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from unifashion.data.sources import describe_source

    summary = describe_source(args.format, args.path, split=args.split)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from unifashion.data.catalogue import CatalogueConfig, build_catalogue_files, load_catalogue
    from unifashion.data.contact_sheet import catalogue_contact_sheet

    out = Path(args.output)
    cat_dir = out / "catalogue"
    config = CatalogueConfig(n_items=args.n_items, seed=args.seed)
    meta = cat_dir / "catalogue.json"
    reuse = meta.is_file() and json.loads(meta.read_text()).get("config", {}).get("n_items") == args.n_items \
        and json.loads(meta.read_text()).get("config", {}).get("seed") == args.seed
    if reuse:
        catalogue = load_catalogue(cat_dir)
        print(f"[1/2] reusing the embedded catalogue in {cat_dir} ({len(catalogue.items)} items)")
    else:
        print(f"[1/2] building the embedded catalogue ({args.n_items} items) in {cat_dir}")
        catalogue = build_catalogue_files(cat_dir, config, workers=args.workers)
    counts = {s: sum(it.split == s for it in catalogue.items) for s in ("train", "val", "test")}
    print(f"      items per split: {counts}; CIR triplets: {len(catalogue.triplets)}")
    sheet = catalogue_contact_sheet(catalogue, out / "contact_sheet.png")
    print(f"[2/2] contact sheet of items, captions and CIR triplets: {sheet.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifashion", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"unifashion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the main job on the embedded default: build the catalogue and show it")
    demo.add_argument("--output", default="outputs/demo", help="folder for everything the demo writes")
    demo.add_argument("--n-items", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=_cmd_demo)

    data = sub.add_parser("data", help="build, show and check fashion datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    build = dsub.add_parser("build", help="render the embedded synthetic catalogue to a folder")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--n-items", type=int, default=2000, help="items in all, edited targets included")
    build.add_argument("--size", type=int, default=128, help="image size in pixels")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--workers", type=int, default=2, help="rendering processes")
    build.add_argument("--categories", nargs="*", help="categories to include (default: all)")
    build.set_defaults(func=_cmd_data_build)

    show = dsub.add_parser("show", help="write a contact sheet PNG of a built catalogue")
    show.add_argument("catalogue", help="folder written by `unifashion data build`")
    show.add_argument("--out", help="PNG path (default: CATALOGUE/contact_sheet.png)")
    show.add_argument("--n-items", type=int, default=18)
    show.add_argument("--n-triplets", type=int, default=4)
    show.add_argument("--style", default="short", choices=["short", "professional", "detailed"])
    show.set_defaults(func=_cmd_data_show)

    check = dsub.add_parser("check", help="read a dataset in one of the supported formats and summarise it")
    check.add_argument("format", choices=["embedded", "fashion-mnist", "fashion-iq", "fashiongen", "fashion200k",
                                          "viton"])
    check.add_argument("path", help="the dataset's root folder (or file, for FashionGen h5/jsonl)")
    check.add_argument("--split", default=None)
    check.set_defaults(func=_cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
