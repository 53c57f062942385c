"""``unifashion caption``, ``generate`` and ``tryon``: captioning, generation, and the design/try-on run."""

from __future__ import annotations

import argparse
from pathlib import Path

from unifashion.cli.common import MODEL_HELP, ConfigSpec, add_config_option, configured, load_model, reports_errors
from unifashion.settings import GENERATION, SAMPLERS


@reports_errors
def _cmd_caption(args: argparse.Namespace) -> int:
    from unifashion.data.records import load_image
    from unifashion.pipelines import SearchPipeline

    images = [load_image(path) for path in args.images]
    pipeline = SearchPipeline(load_model(args.model), None)
    for path, image in zip(args.images, images, strict=True):
        caption = pipeline.caption(image, args.style)
        print(f"{path}: {caption}" if len(args.images) > 1 else caption)
    return 0


@reports_errors
def _cmd_generate(args: argparse.Namespace) -> int:
    from unifashion.data.records import load_image
    from unifashion.pipelines import SearchPipeline

    if args.garment and args.image:
        raise ValueError("give the garment once: --garment (try-on) or --image (composed generation)")
    args.image = args.image or args.garment
    images = {name: load_image(getattr(args, name)) if getattr(args, name) else None
              for name in ("image", "mask", "sketch", "person")}
    if (images["mask"] is None) != (images["person"] is None):
        raise ValueError("design / try-on needs both --person and --mask (white = the region to redraw)")
    if images["person"] is not None:  # design / try-on: the result keeps the person's size and pixels
        import torch

        from unifashion.pipelines.tryon import generate_on_person

        generated = generate_on_person(load_model(args.model), images["person"], images["mask"], text=args.text,
                                       garment=images["image"], sketch=images["sketch"], steps=args.steps,
                                       scheduler=args.scheduler, guidance=args.guidance,
                                       generator=torch.Generator().manual_seed(args.seed))[0]
    else:
        pipeline = SearchPipeline(load_model(args.model), None)
        generated = pipeline.generate(args.text, **images, steps=args.steps, scheduler=args.scheduler,
                                      guidance=args.guidance, seed=args.seed)[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    generated.save(out)
    print(f"generated {generated.size[0]}x{generated.size[1]} image (seed {args.seed}): {out.resolve()}")
    return 0


def _cap_warmup(args: argparse.Namespace, config) -> None:
    """With ``--train-steps N`` the warm-up is at most N / 10 steps (a short run still reaches its lr)."""
    if args.train_steps is not None:
        optim = config.train.loop.optim
        optim.warmup_steps = min(optim.warmup_steps, max(1, args.train_steps // 10))


TRYON = ConfigSpec("unifashion.experiments.tryon:TryOnRunConfig", {
    "out": "out", "data": "data", "n_items": "n_items", "model": "model", "classifier": "classifier",
    "train_steps": "train.loop.steps", "batch_size": "train.loop.batch_size", "lr": "train.loop.optim.lr",
    "paper_freezing": ("train.train_unet", lambda _: False), "tryon_sketch": "train.tryon_sketch",
    "eval_items": ("eval.max_items", lambda n: n or None), "sample_steps": "eval.steps", "guidance": "eval.guidance",
    "seed": "train.loop.seed"},
    extra=lambda args: {} if args.seed is None else {"eval.seed": args.seed}, adjust=_cap_warmup)


@configured(TRYON)
def _cmd_tryon(args: argparse.Namespace, config) -> int:
    import torch

    from unifashion.experiments.tryon import run_tryon

    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_tryon(config, progress=not args.no_progress)
    print(report["markdown"])
    print(f"results: {report['results']}\ngrid: {report['grid']}\ntimings (s): {report['timings']}")
    return 0


def register(sub) -> None:
    ca = sub.add_parser("caption", help="caption images (short, professional or detailed)")
    ca.add_argument("images", nargs="+", metavar="IMAGE")
    ca.add_argument("--style", default="detailed", choices=["short", "professional", "detailed"])
    ca.add_argument("--model", default="tiny-default", help=MODEL_HELP)
    ca.set_defaults(func=_cmd_caption)

    ge = sub.add_parser("generate", help="generate an image from text, image + text, or person + mask (+ sketch)")
    ge.add_argument("--text", help="what to draw, or how to change --image")
    ge.add_argument("--image", help="reference garment (composed generation)")
    ge.add_argument("--mask", help="try-on: mask image, white = region of --person to redraw")
    ge.add_argument("--sketch", help="try-on: garment sketch")
    ge.add_argument("--person", help="design / try-on: the person image (the result keeps its size)")
    ge.add_argument("--garment", help="try-on: the in-shop garment image (with --person and --mask)")
    ge.add_argument("--out", required=True, help="PNG file to write")
    ge.add_argument("--steps", type=int, default=GENERATION.steps)
    ge.add_argument("--scheduler", default=GENERATION.sampler, choices=SAMPLERS)
    ge.add_argument("--guidance", type=float, default=GENERATION.guidance)
    ge.add_argument("--seed", type=int, default=0)
    ge.add_argument("--model", default="tiny-default", help=MODEL_HELP)
    ge.set_defaults(func=_cmd_generate)

    to = sub.add_parser("tryon", help="fashion design + virtual try-on end to end on embedded worn views: build "
                                      "the data, train (resumable), evaluate paired/unpaired with baselines")
    add_config_option(to, TRYON)
    to.add_argument("--out", help="folder for data, checkpoints, model, results, grid")
    to.add_argument("--data", help="a VITON-HD/MGD-layout folder to use instead of building OUT/worn")
    to.add_argument("--n-items", type=int, help="embedded catalogue size the worn views come from")
    to.add_argument("--model", help="model to start from")
    to.add_argument("--train-steps", type=int, help="training steps (the warm-up is at most a tenth of them)")
    to.add_argument("--batch-size", type=int, help="half design, half try-on")
    to.add_argument("--lr", type=float)
    to.add_argument("--paper-freezing", action="store_true", default=None,
                    help="the paper's try-on choice: diffusion frozen, Q-Former + TSA_diff tuned (default: the "
                         "UNet and TSA_diff learn; our tiny UNet never saw a person)")
    to.add_argument("--tryon-sketch", action="store_true", default=None,
                    help="give try-on the garment sketch channel too")
    to.add_argument("--eval-items", type=int, help="test persons per setting (0: all)")
    to.add_argument("--sample-steps", type=int, help="denoising steps per generated image")
    to.add_argument("--guidance", type=float)
    to.add_argument("--classifier", help="worn-garment attribute judge folder (default: OUT/worn-attribute-judge, "
                                         "trained there if missing)")
    to.add_argument("--seed", type=int, help="the training's and the evaluation's seed")
    to.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    to.add_argument("--no-progress", action="store_true")
    to.set_defaults(func=_cmd_tryon)
