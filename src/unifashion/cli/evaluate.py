"""``unifashion eval`` (every task's protocol beside the baselines) and ``unifashion results merge``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unifashion.cli.common import ConfigSpec, add_config_option, add_device_flags, configured
from unifashion.evaluation.tasks import TASKS
from unifashion.settings import SAMPLERS

TASK_CHOICES = list(TASKS)


def _ablations(args: argparse.Namespace) -> dict:
    """``--ablation NAME=PATH`` (repeated): these replace the file's ablations."""
    if not args.ablation:
        return {}
    out = {}
    for spec in args.ablation:
        name, _, path = spec.partition("=")
        if not path:
            raise ValueError(f"--ablation takes NAME=PATH, got {spec!r}")
        out[name] = path
    return {"ablations": out}


EVAL = ConfigSpec("unifashion.experiments.evaluate:EvalRunConfig", {
    "model": "model", "catalogue": "catalogue", "out": "out", "dual_encoder": "dual_encoder",
    "two_stage_cir": "two_stage_cir", "classifier": "classifier", "inception": "inception", "clip": "clip",
    "split": "eval.split", "same_product": "eval.same_product", "fashion_iq": "fashion_iq",
    "cir_gallery": "eval.cir_gallery", "cir_caption_join": "eval.cir_caption_join",
    "seed": "eval.seed", "tasks": "eval.tasks", "fig_items": "eval.fig_max_items", "fig_steps": "eval.fig_steps",
    "fig_scheduler": "eval.fig_scheduler", "fig_guidance": "eval.fig_guidance", "itm_rerank": "eval.itm_rerank_k",
    "cir_ks": "eval.cir_ks",
    "data": "data", "device": "device", "precision": "precision", "feature_cache": "eval.feature_cache"},
    extra=_ablations)


@configured(EVAL)
def _cmd_eval(args: argparse.Namespace, config) -> int:
    from unifashion.experiments.evaluate import run_evaluation

    for line in run_evaluation(config).summary_lines():
        print(line)
    return 0


def _cmd_results_merge(args: argparse.Namespace) -> int:
    from unifashion.evaluation.results import ResultTable

    try:
        table = ResultTable.merge([ResultTable.load_json(f) for f in args.files])
    except (OSError, ValueError) as exc:
        print(f"unifashion: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    table.save_json(out / "results.json")
    table.save_markdown(out / "results.md")
    print(table.to_markdown())
    print(f"merged {len(args.files)} files, {len(table.rows)} rows: {out.resolve()}")
    return 0


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate CMR, CIR, FIC and FIG with baselines; writes results.json, "
                                     "a Markdown table and plots")
    add_config_option(ev, EVAL)
    ev.add_argument("--model", help="a saved UniFashion model folder or trained tag; 'none' evaluates only the "
                                    "baselines")
    ev.add_argument("--catalogue")
    ev.add_argument("--data", metavar="SPEC",
                    help="evaluate on one real dataset instead of the catalogue: KIND:PATH[?split=S], KIND one of "
                         "fashiongen, fashion200k, fashioniq, viton, imagefolder, embedded (default split: the "
                         "kind's test split)")
    ev.add_argument("--feature-cache", metavar="DIR",
                    help="keep the split's frozen vision features here, for later runs (default: a temporary folder)")
    add_device_flags(ev, workers=False)
    ev.add_argument("--out")
    ev.add_argument("--split")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--tasks", nargs="+", choices=TASK_CHOICES)
    ev.add_argument("--dual-encoder", help="a trained dual-encoder baseline folder")
    ev.add_argument("--two-stage-cir", help="a model trained by `unifashion cir-train` (CMR/CIR)")
    ev.add_argument("--ablation", action="append", help="NAME=PATH of another UniFashion checkpoint (CMR/CIR); "
                                                        "these replace a config file's ablations")
    ev.add_argument("--classifier", help="the attribute classifier judging generated images (trained there if "
                                         "missing)")
    ev.add_argument("--inception", help="a local TorchScript Inception file (inception-2015-12-05.pt, or its "
                    "folder) for standard FID/KID, computed by torchmetrics")
    ev.add_argument("--fashion-iq", help="a Fashion-IQ root (captions/, image_splits/, images/): CIR on it "
                    "instead of the catalogue (split val)")
    ev.add_argument("--cir-gallery", choices=["split", "references-and-targets"],
                    help="Fashion-IQ protocol: the split's image list (original, default) or its references and "
                    "targets (VAL's)")
    ev.add_argument("--cir-caption-join", choices=["and", "each"],
                    help="the two relative captions: joined with ' and ' (default) or each its own query")
    ev.add_argument("--same-product", choices=["dedup", "positives"],
                    help="several images of one product (FashionGen): keep the first of each (dedup, the "
                    "default) or count the others as positives")
    ev.add_argument("--clip", help="a local CLIP folder (transformers layout) for CLIP-S of generated images")
    ev.add_argument("--fig-items", type=int)
    ev.add_argument("--fig-steps", type=int)
    ev.add_argument("--fig-scheduler", choices=SAMPLERS)
    ev.add_argument("--fig-guidance", type=float, help="classifier-free guidance scale of the generated images")
    ev.add_argument("--itm-rerank", type=int, help="ITM re-rank of the CIR top-k (0: off)")
    ev.add_argument("--cir-ks", type=int, nargs="+",
                    help="CIR recall cut-offs (Fashion-IQ reports 10 and 50; add 1 and 5 where those saturate)")
    ev.set_defaults(func=_cmd_eval)

    rs = sub.add_parser("results", help="work with results.json files")
    rs_sub = rs.add_subparsers(dest="results_command", required=True)
    rm = rs_sub.add_parser("merge", help="merge results.json files (e.g. one eval run per seed) into one table "
                                         "with mean ± std over seeds")
    rm.add_argument("files", nargs="+", help="results.json files")
    rm.add_argument("--out", required=True, help="folder for the merged results.json and results.md")
    rm.set_defaults(func=_cmd_results_merge)
    register_shipped(sub)
    register_docs(sub)


def _cmd_shipped_measure(args: argparse.Namespace) -> int:
    from unifashion.experiments import shipped

    commit = args.trained_at or shipped.code_commit()
    training = {"tiny-default": shipped.training_record(Path(args.runs) / "default", commit),
                "dual-encoder-default": shipped.training_record(Path(args.runs) / "dual-encoder", commit)}
    seeds = () if args.no_noise else shipped.NOISE_SEEDS
    for path in shipped.measure_shipped(args.work, training, demo_catalogue=args.demo_catalogue, noise_seeds=seeds):
        print(f"wrote {path}")
    return 0


def _cmd_docs_render(args: argparse.Namespace) -> int:
    from unifashion.experiments import tables

    root = Path(args.root)
    if not (root / "README.md").is_file():
        raise ValueError(f"{root}: not the repository root (no README.md); pass --root")
    changed = tables.render_tree(root, check=args.check)
    missing = tables.unsourced_numbers(root)
    for path in changed:
        print(f"{path.relative_to(root)}: {'stale' if args.check else 'rendered'}")
    for path, numbers in missing.items():
        print(f"{path}: numbers with no source file: {', '.join(numbers)}")
    if args.check and (changed or missing):
        return 1
    print("every table is current" if not changed else f"{len(changed)} file(s) rendered")
    return 0


def register_docs(sub) -> None:
    docs = sub.add_parser("docs", help="the documentation's tables, rendered from the committed result files")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True)
    render = docs_sub.add_parser("render", help="render every table of README.md and docs/ from its result file")
    render.add_argument("--root", default=".", help="the repository root")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a table is stale or a quoted number has no source")
    render.set_defaults(func=_cmd_docs_render)


def register_shipped(sub) -> None:
    sh = sub.add_parser("shipped", help="the packaged models' measured numbers (weights/TAG/results.json)")
    sh_sub = sh.add_subparsers(dest="shipped_command", required=True)
    me = sh_sub.add_parser("measure", help="measure the packaged tiny-default and dual-encoder-default on the demo "
                                           "split, the held-out catalogue and 3 catalogue seeds; write results.json")
    me.add_argument("--work", default="outputs/shipped", help="catalogues and evaluation reports")
    me.add_argument("--runs", default="runs", help="the training runs (RUNS/default, RUNS/dual-encoder)")
    me.add_argument("--demo-catalogue", default="outputs/demo/catalogue")
    me.add_argument("--trained-at", metavar="COMMIT", help="the code commit that trained them (default: HEAD)")
    me.add_argument("--no-noise", action="store_true", help="skip the extra catalogue seeds of the noise")
    me.set_defaults(func=_cmd_shipped_measure)
