"""``unifashion train`` (the two-phase recipe) and ``unifashion train-baseline`` (the dual encoder)."""

from __future__ import annotations

import argparse
import json
import time

from unifashion.cli.common import ConfigSpec, add_config_option, add_device_flags, configured


def _recipe(args: argparse.Namespace):
    """The recipe file (``--recipe``/``--config``) or the tiny preset's, with the flags given on top."""
    from unifashion.configuration import ConfigError
    from unifashion.training.recipe import TrainRecipe, default_recipe

    if not args.recipe:
        return default_recipe(args.output_dir or "runs/tiny", scale=1.0 if args.scale is None else args.scale,
                              seed=args.seed or 0)
    if args.scale is not None:
        raise ValueError("--scale multiplies the default recipe's steps; with --recipe/--config set the steps "
                         "in the file")
    try:
        recipe = TrainRecipe.load(args.recipe)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    if args.output_dir:
        recipe.output_dir = args.output_dir
    if args.seed is not None:
        recipe.seed = args.seed
        for stage in recipe.stages:
            stage.loop.seed = args.seed
    return recipe


def warm_start(recipe, source: str, stages: str | None, learn: str | None, steps: int | None,
               terms: str | None = None) -> None:
    """``--from``: the recipe continues from ``source`` (a trained tag or model folder) instead of
    the preset, running only ``stages`` (comma-separated names; default every stage), with
    ``learn`` (comma-separated parameter groups) in place of each stage's phase's groups and
    ``steps`` per stage, and ``terms`` (comma-separated loss terms, e.g. ``q2i`` alone when only
    the UNet learns) in place of the stage's. Errors name the unknown stage, group or term."""
    from unifashion.configuration import ConfigError
    from unifashion.objectives.phases import PARAMETER_GROUPS, check_groups, check_terms

    recipe.model, recipe.model_overrides = source, {}
    if stages:
        names = [name.strip() for name in stages.split(",") if name.strip()]
        known = [stage.name for stage in recipe.stages]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(f"--stages: unknown stage {unknown[0]!r}; the recipe's stages: {', '.join(known)}")
        recipe.stages = [stage for stage in recipe.stages if stage.name in names]
    for stage in recipe.stages:
        if learn:
            groups = [group.strip() for group in learn.split(",") if group.strip()]
            try:
                check_groups(groups)
            except ValueError as exc:
                raise ConfigError(f"--learn: {exc}") from exc
            stage.learns = groups
        if steps is not None:
            stage.loop.steps = steps
        if terms:
            chosen = [term.strip() for term in terms.split(",") if term.strip()]
            try:
                check_terms(chosen)
            except ValueError as exc:
                raise ConfigError(f"--terms: {exc}") from exc
            stage.terms = chosen
    if learn and not recipe.stages:
        raise ConfigError(f"--learn {learn}: no stage to train (groups: {', '.join(PARAMETER_GROUPS)})")


def _cmd_train(args: argparse.Namespace) -> int:
    from unifashion.training.recipe import run_recipe

    recipe = _recipe(args)
    if args.from_model:
        warm_start(recipe, args.from_model, args.stages, args.learn, args.steps, args.terms)
    elif args.stages or args.learn or args.terms or args.steps is not None:
        raise ValueError("--stages, --learn, --terms and --steps choose what a warm start trains: give --from TAG "
                         "too")
    if args.catalogue:
        recipe.data.catalogue = args.catalogue
    if args.fashion_mnist_pairs is not None:
        recipe.data.fashion_mnist_pairs = args.fashion_mnist_pairs
    apply_data_and_device_flags(recipe, args)
    if args.print_recipe:
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    start = time.perf_counter()
    deadline = time.time() + 60 * args.minutes if args.minutes else None
    final = run_recipe(recipe, deadline=deadline)  # writes the recipe it runs to OUTPUT_DIR/recipe.json first
    print(f"trained model: {final} ({(time.perf_counter() - start) / 60:.1f} min)")
    if final.name == "out-of-time":
        print("the wall-time budget ran out before the last stage's end: the model above is where training "
              "stood; run the same command again to continue from its checkpoint")
    if args.from_model and args.compare:
        compare_with_shipped(final, args.from_model, recipe.output_dir, args.compare_tasks)
    install_model(final, args.install_as, args.package, args.dtype)
    return 0


def compare_with_shipped(model_dir, tag: str, output_dir: str, tasks: str | None) -> None:
    """Evaluate a warm-started model on the shipped model's demo-split protocol and write, beside
    the run, how each number moved against the shipped ones (OUTPUT_DIR/compare/comparison.md)."""
    from pathlib import Path

    from unifashion.experiments import shipped
    from unifashion.models import pretrained

    if tag not in pretrained.TRAINED_TAGS or not pretrained.is_packaged(tag):
        print(f"no comparison: {tag!r} is not a packaged tag with shipped numbers")
        return
    results = shipped.load_results(shipped.results_path(tag))
    protocol = shipped.DEMO_SPLIT
    chosen = [t.strip() for t in tasks.split(",")] if tasks else list(protocol.tasks)
    work = Path(output_dir) / "compare"
    rows = shipped.measure(protocol, str(model_dir), None, work, tasks=chosen)
    verdict = shipped.write_comparison(work, shipped.compare(results, rows, tag),
                                       f"{model_dir} against the shipped {tag}")
    print(f"comparison with the shipped {tag}: {work / 'comparison.md'}: "
          f"{'replace it' if verdict['replace'] else 'keep it'} ({verdict['reason']})")


def apply_data_and_device_flags(recipe, args: argparse.Namespace) -> None:
    """``--data``, ``--feature-cache`` and the device flags onto the recipe (the device flags onto
    every stage's loop). A bad ``--data`` spec is an error here, before any model is built."""
    from unifashion.configuration import ConfigError
    from unifashion.data.spec import parse_data_spec

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if args.data:
        parse_data_spec(args.data)  # names the bad source now
        recipe.data.sources = args.data
    if args.feature_cache:
        recipe.data.feature_cache = args.feature_cache
    if args.workers is not None:
        recipe.data.cache_workers = args.workers
    for stage in recipe.stages:
        loop = stage.loop
        for flag, name in (("device", "device"), ("precision", "mixed_precision"),
                           ("grad_accum", "gradient_accumulation"), ("workers", "num_workers")):
            if getattr(args, flag) is not None:
                setattr(loop, name, getattr(args, flag))
        if args.activation_checkpointing:
            loop.activation_checkpointing = True
        try:
            loop.__post_init__()  # the flags are checked as a config file's values are
        except ConfigError as exc:
            raise ConfigError(f"stage {stage.name!r}: {exc}") from exc


def install_model(final, tag: str | None, package: bool, dtype: str = "float16") -> None:
    """``--install-as TAG``: into the local cache; with ``--package``, also as the package data that
    ships with the code (``dtype``, wheel parts left out, a manifest; every tag's together at most 50 MB)."""
    if package and not tag:
        raise ValueError("--package needs --install-as TAG (the tag the packaged model ships as)")
    if not tag:
        return
    from unifashion.models import pretrained

    print(f"installed as {tag!r}: {pretrained.install(tag, final)}")
    if package:
        print(f"packaged as {tag!r} (commit it to ship it): {pretrained.package(tag, final, dtype=dtype)}")


BASELINE = ConfigSpec("unifashion.experiments.baseline:BaselineRunConfig", {
    "output_dir": "output_dir", "catalogue": "data.catalogue", "fashion_mnist_pairs": "data.fashion_mnist_pairs",
    "encoder_steps": "encoder_steps", "combiner_steps": "combiner_steps", "seed": "seed"})


@configured(BASELINE)
def _cmd_train_baseline(args: argparse.Namespace, config) -> int:
    from unifashion.experiments.baseline import run_baseline

    final = run_baseline(config)
    print(f"dual-encoder baseline: {final}")
    install_model(final, args.install_as, args.package, args.dtype)
    return 0


def register(sub) -> None:
    tr = sub.add_parser("train", help="two-phase training (phase 1 pairs, phase 2 CIR triplets); resumable")
    tr.add_argument("--recipe", "--config", dest="recipe", metavar="FILE",
                    help="a training recipe JSON, the run's config (default: the tiny preset's recipe); the flags "
                         "given here override it; the recipe run is written to OUTPUT_DIR/recipe.json")
    tr.add_argument("--output-dir", help="run folder (default: runs/tiny); re-running resumes it")
    tr.add_argument("--catalogue", help="embedded catalogue folder (built if missing)")
    tr.add_argument("--data", metavar="SPEC",
                    help="train on real datasets instead of the embedded catalogue: KIND:PATH[?opt=v][@WEIGHT],... "
                         "with KIND fashiongen, fashion200k, fashioniq, viton, imagefolder or embedded, e.g. "
                         "'fashiongen:FG.h5@0.5,fashion200k:F200K@0.3,fashioniq:FIQ@0.2' (phase 1 on the captioned "
                         "images, weighted; phase 2 on the triplets)")
    tr.add_argument("--feature-cache", metavar="DIR",
                    help="folder of the frozen vision-feature caches (default: OUTPUT_DIR/feature-cache)")
    add_device_flags(tr)
    tr.add_argument("--grad-accum", type=int, metavar="N",
                    help="split each step's batch into N micro-batches whose gradients add up")
    tr.add_argument("--activation-checkpointing", action="store_true",
                    help="recompute activations in the backward pass (less memory, more compute)")
    tr.add_argument("--fashion-mnist-pairs", type=int, help="Fashion-MNIST pairs added to phase 1")
    tr.add_argument("--scale", type=float, help="multiply the default recipe's step counts (default: 1)")
    tr.add_argument("--seed", type=int, help="the recipe's seed and its stages' (default: 0)")
    tr.add_argument("--print-recipe", action="store_true", help="print the recipe as JSON and exit")
    tr.add_argument("--from", dest="from_model", metavar="TAG_OR_DIR",
                    help="warm start: continue from a trained tag (e.g. tiny-default, the shipped model) or a model "
                         "folder instead of training the preset from scratch")
    tr.add_argument("--stages", metavar="NAMES",
                    help="with --from: the recipe stages to run, comma-separated (e.g. phase1-generators)")
    tr.add_argument("--learn", metavar="GROUPS",
                    help="with --from: the parameter groups that learn in those stages, comma-separated (qformer, "
                         "heads, llm_adapter, llm, diffusion_adapter, unet, vae); default: the stage's own")
    tr.add_argument("--steps", type=int, help="with --from: steps of each stage run")
    tr.add_argument("--terms", metavar="TERMS",
                    help="with --from: the loss terms of those stages, comma-separated (itc, itm, itg, q2i, vae, cir; "
                         "e.g. q2i alone when only the UNet learns, so the frozen caption LM is not run)")
    tr.add_argument("--minutes", type=float,
                    help="wall-time budget: stop at a checkpoint when it runs out (run again to continue)")
    tr.add_argument("--no-compare", dest="compare", action="store_false",
                    help="with --from TAG: do not evaluate the result against the shipped numbers at the end")
    tr.add_argument("--compare-tasks", metavar="TASKS",
                    help="with --from TAG: the tasks of that comparison, comma-separated (default: the demo split's: "
                         "cmr,cir,fic,fig,phrasing)")
    tr.add_argument("--install-as", help="when done, install the model under this trained tag (e.g. tiny-default)")
    tr.add_argument("--package", action="store_true",
                    help="with --install-as: also write it as package data (src/unifashion/weights/TAG, float16, "
                         "with a sha256 manifest), the model that ships with the code")
    tr.add_argument("--dtype", default="float16", choices=("float16", "int8"),
                    help="with --package: how the weights are stored (int8: per-row scales, smaller, lossy)")
    tr.set_defaults(func=_cmd_train)

    tb = sub.add_parser("train-baseline", help="train the CLIP-style dual-encoder baseline (CLIP4CIR two stages)")
    add_config_option(tb, BASELINE)
    tb.add_argument("--output-dir")
    tb.add_argument("--catalogue")
    tb.add_argument("--fashion-mnist-pairs", type=int)
    tb.add_argument("--encoder-steps", type=int)
    tb.add_argument("--combiner-steps", type=int)
    tb.add_argument("--seed", type=int)
    tb.add_argument("--install-as", help="when done, install the baseline under this trained tag "
                                         "(dual-encoder-default: the one the demo compares against)")
    tb.add_argument("--package", action="store_true",
                    help="with --install-as: also write it as package data (src/unifashion/weights/TAG)")
    tb.add_argument("--dtype", default="float16", choices=("float16", "int8"),
                    help="with --package: how the weights are stored (int8: per-row scales, smaller, lossy)")
    tb.set_defaults(func=_cmd_train_baseline)
