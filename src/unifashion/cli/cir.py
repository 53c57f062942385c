"""The two-stage CIR recipe's commands: ``triplets mine``, ``cir-train`` (one model) and
``cir-recipe`` (the whole experiment)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unifashion.cli.common import (
    MODEL_HELP,
    ConfigSpec,
    add_config_option,
    configured,
    given_flags,
    prefixed,
    reports_errors,
)

MINING_FLAGS = {"targets_per_reference": "targets_per_reference", "min_changes": "min_changes",
                "max_changes": "max_changes", "agreement_quantile": "agreement_quantile",
                "no_pair_agreement": ("pair_agreement", lambda _: False),
                "no_verify_edits": ("verify_edits", lambda _: False), "seed": "seed"}
CIR_TRAIN = ConfigSpec("unifashion.experiments.cir_train:CIRTrainConfig", {
    "catalogue": "catalogue", "triplets": "triplets", "output_dir": "output_dir", "backbone": "backbone",
    "vision_path": "vision_path", "captioner": "captioner", "stages": "method.stages",
    "no_prompts": ("method.sentence_prompts", lambda _: False),
    "no_static_negatives": ("method.static_negatives", lambda _: False), "stage1_steps": "method.stage1_steps",
    "stage2_steps": "method.stage2_steps", "batch_size": "method.batch_size", "seed": "method.seed"})


def _checked_runs(args: argparse.Namespace) -> dict:
    from unifashion.experiments.cir_recipe import RUNS

    if args.runs and any(r not in RUNS for r in args.runs):
        raise ValueError(f"--runs takes some of {sorted(RUNS)}, got {args.runs}")
    return {}


CIR_RECIPE = ConfigSpec("unifashion.experiments.cir_recipe:CIRRecipeConfig", {
    "catalogue": "catalogue", "heldout": ("heldout_catalogue", lambda h: None if h == "none" else h),
    "captioner": "captioner", "backbone": "backbone", "seeds": "seeds", "runs": "runs",
    "stage1_steps": "method.stage1_steps", "stage2_steps": "method.stage2_steps",
    "no_unifashion": ("evaluate_unifashion", lambda _: False), **prefixed(MINING_FLAGS, "mining")},
    extra=_checked_runs)


@reports_errors
def _cmd_triplets_mine(args: argparse.Namespace) -> int:
    from unifashion.data.mining import MiningConfig
    from unifashion.experiments.cir_train import mine_triplet_file

    run = mine_triplet_file(args.images, args.out, args.model, MiningConfig(**given_flags(args, MINING_FLAGS)),
                            split=args.split)
    report = run.report
    print(f"mined {report['triplets']} triplets from {run.images} images -> {args.out} "
          f"(filters: {json.dumps(report['counts'])}); report: {run.report_file}")
    if "precision" in report:
        print(f"precision against the ground truth: claims {report['precision']['claim_precision']['overall']:.1f}%, "
              f"whole triplets {report['precision']['triplet_precision']:.1f}%")
    return 0


@reports_errors
@configured(CIR_TRAIN)
def _cmd_cir_train(args: argparse.Namespace, config) -> int:
    from unifashion.experiments.cir_train import train_cir

    result = train_cir(config)
    print(f"two-stage CIR model ({result.triplets} triplets): {result.model}")
    return 0


@reports_errors
@configured(CIR_RECIPE)
def _cmd_cir_recipe(args: argparse.Namespace, config) -> int:
    from unifashion.experiments.cir_recipe import run_cir_recipe

    start = time.perf_counter()
    run_cir_recipe(args.out, config)
    print((Path(args.out) / "results.md").read_text())
    print(f"results: {Path(args.out).resolve() / 'results.md'} ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


def _mining_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets-per-reference", type=int, help="mined targets per reference image")
    p.add_argument("--min-changes", type=int, help="fewest attributes a mined pair differs in")
    p.add_argument("--max-changes", type=int, help="most attributes a mined pair differs in")
    p.add_argument("--agreement-quantile", type=float,
                   help="drop this lowest fraction of images by the captioner's own image-caption score (0: off)")
    p.add_argument("--no-pair-agreement", action="store_true", default=None,
                   help="keep pairs where an image scores the other's caption as high as its own")
    p.add_argument("--no-verify-edits", action="store_true", default=None,
                   help="keep edits the captioner's own ITC cannot confirm against a counterfactual caption")


def register(sub) -> None:
    triplets = sub.add_parser("triplets", help="CIR triplets: mine them from images without annotations")
    tsub = triplets.add_subparsers(dest="triplets_command", metavar="TRIPLETS_COMMAND", required=True)
    mine = tsub.add_parser("mine", help="caption images, pair those differing in 1-3 attributes, write "
                                        "Fashion-IQ-style relative captions (our triplet JSONL format)")
    mine.add_argument("--images", required=True, help="a folder of images, an image folder with metadata.jsonl/csv, "
                                                      "or an embedded catalogue folder")
    mine.add_argument("--split", help="only this split of an embedded catalogue (e.g. train)")
    mine.add_argument("--out", required=True, help="the triplet file to write (.jsonl); a .report.json lands beside it")
    mine.add_argument("--model", default="tiny-default", help="the captioner: " + MODEL_HELP)
    mine.add_argument("--batch-size", type=int, default=64)
    mine.add_argument("--seed", type=int, help="the mining seed")
    _mining_options(mine)
    mine.set_defaults(func=_cmd_triplets_mine)

    ct = sub.add_parser("cir-train", help="train the two-stage CIR recipe (encoders, then combiner) on the dual "
                                          "encoder, with sentence prompts and static negatives")
    add_config_option(ct, CIR_TRAIN)
    ct.add_argument("--catalogue", help="its train split's images are the gallery")
    ct.add_argument("--triplets", nargs="+", help="triplet JSONL files, their split 'train' rows (default: the "
                                                  "catalogue's train triplets)")
    ct.add_argument("--output-dir")
    ct.add_argument("--backbone", help="a trained dual-encoder folder (default: the cached dual-encoder-default)")
    ct.add_argument("--vision-path", help="paper preset: a local CLIP ViT directory (safetensors) as the vision "
                                          "tower at its own image size, CLIP normalisation; heads trained from scratch")
    ct.add_argument("--captioner", help="writes the sentence-level prompts: " + MODEL_HELP)
    ct.add_argument("--stages", nargs="+", choices=["encoders", "combiner"])
    ct.add_argument("--no-prompts", action="store_true", default=None, help="the relative caption alone as the text")
    ct.add_argument("--no-static-negatives", action="store_true", default=None, help="in-batch negatives only")
    ct.add_argument("--stage1-steps", type=int)
    ct.add_argument("--stage2-steps", type=int)
    ct.add_argument("--batch-size", type=int)
    ct.add_argument("--seed", type=int)
    ct.set_defaults(func=_cmd_cir_train)

    cr = sub.add_parser("cir-recipe", help="the two-stage CIR recipe's experiment: mining + precision, training on "
                                           "annotated / mined / both, ablations, seeds, evaluation beside baselines")
    add_config_option(cr, CIR_RECIPE)
    cr.add_argument("--out", default="outputs/cir-recipe")
    cr.add_argument("--catalogue")
    cr.add_argument("--heldout", help="a second test catalogue, or 'none'")
    cr.add_argument("--captioner", help=MODEL_HELP)
    cr.add_argument("--backbone", help="a trained dual-encoder folder (default: the cached dual-encoder-default)")
    cr.add_argument("--seeds", type=int, nargs="+")
    cr.add_argument("--runs", nargs="+", help="some of the runs (default: all)")
    cr.add_argument("--stage1-steps", type=int)
    cr.add_argument("--stage2-steps", type=int)
    cr.add_argument("--no-unifashion", action="store_true", default=None,
                    help="skip evaluating UniFashion beside the recipe")
    cr.add_argument("--seed", type=int, help="the mining seed")
    _mining_options(cr)
    cr.set_defaults(func=_cmd_cir_recipe)
