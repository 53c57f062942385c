"""``unifashion data``: build, show and check fashion datasets."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _cmd_data_build(args: argparse.Namespace) -> int:
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files

    config = CatalogueConfig(n_items=args.n_items, image_size=args.size, seed=args.seed,
                             categories=tuple(args.categories) if args.categories else CatalogueConfig().categories)
    start = time.perf_counter()
    catalogue = build_catalogue_files(args.out, config, workers=args.workers)
    seconds = time.perf_counter() - start
    print(f"wrote {len(catalogue.items)} items and {len(catalogue.triplets)} triplets to {args.out} "
          f"in {seconds:.1f} s ({len(catalogue.items) / seconds:.0f} items/s)")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from unifashion.data.synthetic.catalogue import load_catalogue
    from unifashion.data.synthetic.contact_sheet import catalogue_contact_sheet

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


def _cmd_data_build_worn(args: argparse.Namespace) -> int:
    from unifashion.data.synthetic.catalogue import CatalogueConfig, load_catalogue, make_catalogue
    from unifashion.data.synthetic.worn import WornConfig, build_worn_dataset

    catalogue = (load_catalogue(args.catalogue) if args.catalogue
                 else make_catalogue(CatalogueConfig(n_items=args.n_items, seed=args.catalogue_seed)))
    start = time.perf_counter()
    counts = build_worn_dataset(catalogue, args.out, WornConfig(size=args.size, seed=args.seed),
                                limit=args.limit, workers=args.workers)
    print(f"wrote worn views {counts} in the VITON-HD/MGD layout to {args.out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def register(sub) -> None:
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

    worn = dsub.add_parser("build-worn", help="draw catalogue garments worn by varied people, with agnostic "
                                              "masks and sketches, in the VITON-HD/MGD layout")
    worn.add_argument("--out", required=True, help="output folder")
    worn.add_argument("--catalogue", help="a built catalogue (default: the embedded one, made in memory)")
    worn.add_argument("--n-items", type=int, default=2000, help="embedded catalogue size (without --catalogue)")
    worn.add_argument("--catalogue-seed", type=int, default=0)
    worn.add_argument("--size", type=int, default=64, help="image side in pixels")
    worn.add_argument("--seed", type=int, default=0, help="seed of the people, poses and test pairs")
    worn.add_argument("--limit", type=int, help="at most this many people per split")
    worn.add_argument("--workers", type=int, default=1, help="rendering processes")
    worn.set_defaults(func=_cmd_data_build_worn)

    check = dsub.add_parser("check", help="read a dataset in one of the supported formats and summarise it")
    check.add_argument("format", choices=["embedded", "fashion-mnist", "fashion-iq", "fashiongen", "fashion200k",
                                          "viton"])
    check.add_argument("path", help="the dataset's root folder (or file, for FashionGen h5/jsonl)")
    check.add_argument("--split", default=None)
    check.set_defaults(func=_cmd_data_check)
