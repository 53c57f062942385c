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


def _cmd_demo(args: argparse.Namespace) -> int:
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files, load_catalogue
    from unifashion.data.synthetic.contact_sheet import catalogue_contact_sheet

    out = Path(args.output)
    cat_dir = out / "catalogue"
    config = CatalogueConfig(n_items=args.n_items, seed=args.seed)
    meta = cat_dir / "catalogue.json"
    existing = json.loads(meta.read_text()).get("config", {}) if meta.is_file() else {}
    if existing.get("n_items") == args.n_items and existing.get("seed") == args.seed:
        catalogue = load_catalogue(cat_dir)
        print(f"[1/5] reusing the embedded catalogue in {cat_dir} ({len(catalogue.items)} items)")
    else:
        print(f"[1/5] building the embedded catalogue ({args.n_items} items) in {cat_dir}")
        catalogue = build_catalogue_files(cat_dir, config, workers=args.workers)
    counts = {s: sum(it.split == s for it in catalogue.items) for s in ("train", "val", "test")}
    print(f"      items per split: {counts}; CIR triplets: {len(catalogue.triplets)}")
    sheet = catalogue_contact_sheet(catalogue, out / "contact_sheet.png")
    print(f"[2/5] contact sheet of items, captions and CIR triplets: {sheet.resolve()}")
    if args.catalogue_only:
        return 0

    from unifashion.models import pretrained

    tag = "tiny-default"
    if pretrained.is_trained(tag):
        print(f"[3/5] loading the trained default model from {pretrained.trained_model_dir(tag)}")
    elif args.no_train:
        print(f"[3/5] {pretrained.missing_message(tag)}")
        return 0
    else:
        from unifashion.training.recipe import default_recipe, run_recipe

        run_dir = pretrained.home() / "runs" / tag
        print(f"[3/5] training the default model once (about an hour on 2 CPU cores; resumable: run again to "
              f"continue) in {run_dir}")
        recipe = default_recipe(str(run_dir))
        recipe.data.catalogue = str(cat_dir)
        pretrained.install(tag, run_recipe(recipe))
    baseline = pretrained.home() / "models" / "dual-encoder-default"
    if not (baseline / "dual_encoder_config.json").is_file() and not args.no_train:
        from unifashion.training.baselines import train_dual_encoder
        from unifashion.training.recipe import DataSpec

        print("      training the dual-encoder baseline once (a few minutes)")
        final = train_dual_encoder(pretrained.home() / "runs" / "dual-encoder-default",
                                   DataSpec(catalogue=str(cat_dir), fashion_mnist_pairs=1000))
        pretrained.install_folder(final, baseline)
    print(f"[4/5] evaluating on the test split -> {out / 'eval'}")
    # Through the eval command's own parser, so the demo always runs with its current defaults.
    eval_argv = ["eval", "--model", tag, "--catalogue", str(cat_dir), "--out", str(out / "eval"),
                 "--tasks", *args.eval_tasks,
                 "--classifier", str(pretrained.home() / "models" / "attribute-classifier")]
    if (baseline / "dual_encoder_config.json").is_file():
        eval_argv += ["--dual-encoder", str(baseline)]
    _cmd_eval(build_parser().parse_args(eval_argv))
    return _demo_search(tag, cat_dir, out / "index", serve_page=not args.no_serve and sys.stdin.isatty())


def _demo_search(model_name: str, catalogue: Path, index_dir: Path, serve_page: bool, port: int = 8000) -> int:
    """The demo's last step: index the test split, answer sample queries, then serve the web page
    (interactive) or print the URL and the answers (non-interactive)."""
    from unifashion.pipelines import SearchPipeline, build_index

    model = _load_model(model_name)
    print(f"[5/5] search over the test split: index in {index_dir}")
    build_index(model, str(catalogue), str(index_dir), split="test", progress=True)
    with SearchPipeline.open(model, str(index_dir), read_only=True) as pipeline:
        query = "a dark blue striped shirt with long sleeves"
        print(f"      sample query: {query!r}")
        _print_hits(pipeline.text_to_images(query, top_k=5))
        first = pipeline.index.ids()[0]
        print(f"      sample composed query: {first} + 'is red with white stripes'")
        from unifashion.data.records import load_image

        image = load_image(Path(catalogue) / "images" / f"{first}.png")
        _print_hits(pipeline.composed(image, "is red with white stripes", top_k=5))
    command = f"unifashion serve --index {index_dir} --model {model_name} --port {port}"
    if not serve_page:
        print(f"      the web page: run `{command}` and open http://127.0.0.1:{port}/")
        return 0
    from unifashion.serving.app import serve

    print(f"      serving the web page at http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    serve(str(index_dir), model_name, port=port)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from unifashion.training.recipe import TrainRecipe, default_recipe, run_recipe

    if args.recipe:
        recipe = TrainRecipe.load(args.recipe)
        if args.output_dir:
            recipe.output_dir = args.output_dir
    else:
        recipe = default_recipe(args.output_dir or "runs/tiny", scale=args.scale, seed=args.seed)
    if args.catalogue:
        recipe.data.catalogue = args.catalogue
    if args.fashion_mnist_pairs is not None:
        recipe.data.fashion_mnist_pairs = args.fashion_mnist_pairs
    if args.print_recipe:
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    start = time.perf_counter()
    final = run_recipe(recipe)
    print(f"trained model: {final} ({(time.perf_counter() - start) / 60:.1f} min)")
    if args.install_as:
        from unifashion.models import pretrained

        print(f"installed as {args.install_as!r}: {pretrained.install(args.install_as, final)}")
    return 0


def _cmd_train_baseline(args: argparse.Namespace) -> int:
    from unifashion.training.baselines import train_dual_encoder
    from unifashion.training.recipe import DataSpec

    data = DataSpec(catalogue=args.catalogue, fashion_mnist_pairs=args.fashion_mnist_pairs)
    final = train_dual_encoder(args.output_dir, data, encoder_steps=args.encoder_steps,
                               combiner_steps=args.combiner_steps, seed=args.seed)
    print(f"dual-encoder baseline: {final}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from unifashion.data.synthetic.catalogue import load_catalogue
    from unifashion.evaluation.results import ResultTable
    from unifashion.evaluation.runner import (
        EvalArtifacts,
        EvalConfig,
        SplitData,
        evaluate_dual_encoder,
        evaluate_random,
        evaluate_unifashion,
        write_report,
    )
    from unifashion.models import UniFashion

    cfg = EvalConfig(split=args.split, seed=args.seed, tasks=tuple(args.tasks), fig_max_items=args.fig_items,
                     fig_steps=args.fig_steps, fig_scheduler=args.fig_scheduler, itm_rerank_k=args.itm_rerank,
                     cir_ks=tuple(args.cir_ks))
    data = SplitData(load_catalogue(args.catalogue), cfg.split)
    table, art = ResultTable(), EvalArtifacts()
    classifier = fid_features = None
    if "fig" in cfg.tasks:
        from unifashion.evaluation.attribute_classifier import load_or_train_classifier
        from unifashion.evaluation.features import EffLiteFeatures, TorchScriptFeatures

        classifier = load_or_train_classifier(args.classifier)
        fid_features = TorchScriptFeatures(args.inception) if args.inception else EffLiteFeatures()
    evaluate_random(data, cfg, table, art)
    if args.dual_encoder:
        from unifashion.models.dual_encoder import DualEncoder

        evaluate_dual_encoder(DualEncoder.from_pretrained(args.dual_encoder), data, cfg, table, art)
    if getattr(args, "two_stage_cir", None):  # the two-stage CIR recipe (issue 6); prompts from --model's captions
        from unifashion.data.mining import caption_collection
        from unifashion.training.two_stage_cir import load_two_stage_cir

        recipe_model, method = load_two_stage_cir(args.two_stage_cir)
        prompts = caption_collection(UniFashion.from_pretrained(args.model), data.items)[0] \
            if method.sentence_prompts else None
        evaluate_dual_encoder(recipe_model, data, cfg, table, art, method="two-stage CIR",
                              combiners=(method.combiner,), reference_captions=prompts)
    for spec in args.ablation or []:
        name, _, path = spec.partition("=")
        if not path:
            raise ValueError(f"--ablation takes NAME=PATH, got {spec!r}")
        ablation_cfg = EvalConfig(**{**cfg.__dict__, "tasks": tuple(t for t in cfg.tasks if t in ("cmr", "cir")),
                                     "itm_rerank_k": 0})
        evaluate_unifashion(UniFashion.from_pretrained(path), data, ablation_cfg, table, art, method=name)
    if args.model != "none":  # "none": only the baselines (e.g. more baseline seeds)
        model = UniFashion.from_pretrained(args.model)
        evaluate_unifashion(model, data, cfg, table, art, classifier=classifier, fid_features=fid_features)
    notes = [f"Model: `{args.model}`; catalogue: `{args.catalogue}` ({len(data.items)} {cfg.split} items, "
             f"{len(data.triplets)} CIR triplets).",
             "FID/KID use EfficientNet-Lite0 pooled features (FID-EffLite0), not Inception, unless --inception "
             "names a local file; the image-text score is UniFashion's own ITC score, not CLIP-S."]
    paths = write_report(table, art, Path(args.out), cfg, notes)
    print(table.to_markdown())
    for name, path in paths.items():
        print(f"{name}: {path.resolve()}")
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


# -- the two-stage CIR recipe: triplet mining, training, the experiment (issue 6) -----------------


def _mining_config(args: argparse.Namespace):
    from unifashion.data.mining import MiningConfig

    return MiningConfig(min_changes=args.min_changes, max_changes=args.max_changes,
                        targets_per_reference=args.targets_per_reference,
                        agreement_quantile=args.agreement_quantile, pair_agreement=not args.no_pair_agreement,
                        verify_edits=not args.no_verify_edits, seed=args.seed)


def _cmd_triplets_mine(args: argparse.Namespace) -> int:
    from unifashion.data.mining import collection_records, mine_collection, mining_precision
    from unifashion.data.synthetic.catalogue import triplet_row, write_triplets_jsonl

    config = _mining_config(args)
    records = collection_records(args.images, args.split)
    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise ValueError(f"--out must name a .jsonl file, got {out}")
    model = _load_model(args.model)
    start = time.perf_counter()
    mined, _, _ = mine_collection(records, model, config)
    split = args.split or "train"
    write_triplets_jsonl(out, (triplet_row(t, split, source="mined") for t in mined.triplets))
    report = {**mined.report(), "captioner": args.model, "images": str(args.images),
              "seconds": round(time.perf_counter() - start, 1)}
    truth = {r.item_id: r.attributes for r in records}
    if all(truth.values()) and mined.triplets:  # ground-truth attributes (the embedded catalogue): measure
        report["precision"] = mining_precision(mined.triplets, mined.attributes, truth)
    report_path = out.with_suffix(".report.json")
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    print(f"mined {len(mined.triplets)} triplets from {len(records)} images -> {out} "
          f"(filters: {json.dumps(mined.counts)}); report: {report_path}")
    if "precision" in report:
        print(f"precision against the ground truth: claims {report['precision']['claim_precision']['overall']:.1f}%, "
              f"whole triplets {report['precision']['triplet_precision']:.1f}%")
    return 0


def _cmd_cir_train(args: argparse.Namespace) -> int:
    from unifashion.data.mining import caption_collection
    from unifashion.data.synthetic.catalogue import load_catalogue, read_triplets_jsonl
    from unifashion.experiments.cir_recipe import CIRRecipeConfig, _backbone_path
    from unifashion.models.dual_encoder import DualEncoder
    from unifashion.training.data import ImageBank
    from unifashion.training.two_stage_cir import TwoStageCIRConfig, train_two_stage_cir

    method = TwoStageCIRConfig(stages=tuple(args.stages), sentence_prompts=not args.no_prompts,
                               static_negatives=not args.no_static_negatives, stage1_steps=args.stage1_steps,
                               stage2_steps=args.stage2_steps, batch_size=args.batch_size, seed=args.seed)
    catalogue = load_catalogue(args.catalogue)
    items = catalogue.item_records("train")
    ids = {r.item_id for r in items}
    triplets = [t for f in args.triplets for t in read_triplets_jsonl(f, ids, split="train")] if args.triplets else \
        catalogue.triplet_records("train")
    if not triplets:
        raise ValueError("no training triplets: give --triplets files or a catalogue with train triplets")
    captions = None
    if method.sentence_prompts:
        captions, _ = caption_collection(_load_model(args.captioner), items)
    if args.vision_path:  # the paper preset: a CLIP ViT from a local directory; the heads start untrained
        from unifashion.models.config import CLIP_MEAN, CLIP_STD, VisionConfig
        from unifashion.models.dual_encoder import DualEncoderConfig

        config_file = Path(args.vision_path) / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"--vision-path {args.vision_path} has no config.json (a saved CLIP checkpoint)")
        hf_config = json.loads(config_file.read_text())
        size = hf_config.get("vision_config", hf_config).get("image_size", 224)
        model = DualEncoder(DualEncoderConfig(vision=VisionConfig(type="hf", path=args.vision_path, image_size=size,
                                                                  image_mean=CLIP_MEAN, image_std=CLIP_STD)))
    else:
        model = DualEncoder.from_pretrained(_backbone_path(CIRRecipeConfig(backbone=args.backbone)))
    bank = ImageBank(items, model, with_generation_images=False)
    final = train_two_stage_cir(model, triplets, bank, args.output_dir, method, captions)
    print(f"two-stage CIR model ({len(triplets)} triplets): {final}")
    return 0


def _cmd_cir_recipe(args: argparse.Namespace) -> int:
    from unifashion.experiments.cir_recipe import RUNS, CIRRecipeConfig, run_cir_recipe
    from unifashion.training.two_stage_cir import TwoStageCIRConfig

    if args.runs and any(r not in RUNS for r in args.runs):
        raise ValueError(f"--runs takes some of {sorted(RUNS)}, got {args.runs}")
    config = CIRRecipeConfig(
        catalogue=args.catalogue, heldout_catalogue=None if args.heldout == "none" else args.heldout,
        captioner=args.captioner, backbone=args.backbone, seeds=tuple(args.seeds), mining=_mining_config(args),
        method=TwoStageCIRConfig(stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps),
        runs=tuple(args.runs) if args.runs else CIRRecipeConfig().runs, evaluate_unifashion=not args.no_unifashion)
    start = time.perf_counter()
    run_cir_recipe(args.out, config)
    print((Path(args.out) / "results.md").read_text())
    print(f"results: {Path(args.out).resolve() / 'results.md'} ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


# -- search, captioning, generation and the service (unifashion.pipelines, unifashion.serving) --


def _reports_errors(handler):
    """Run a command; an error about files, the index or the input is one line and exit status 2."""
    import functools

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from unifashion.index import CatalogueIndexError

        try:
            return handler(args)
        except (OSError, CatalogueIndexError, RuntimeError) as exc:
            print(f"unifashion: error: {exc}", file=sys.stderr)
            return 2
    return run


def _load_model(name: str):
    from unifashion.models import UniFashion

    return UniFashion.from_pretrained(name)


@_reports_errors
def _cmd_index(args: argparse.Namespace) -> int:
    from unifashion.pipelines import build_index

    report = build_index(_load_model(args.model), args.catalogue, args.index, split=args.split,
                         batch_size=args.batch_size, progress=not args.no_progress, ann=args.ann)
    print(report)
    return 0


def _print_hits(hits) -> None:
    for hit in hits:
        captions = hit.metadata.captions
        text = captions.get("short") or next(iter(captions.values()), "") or hit.metadata.fusion_caption
        fusion = f" (max-sim {hit.maxsim:.4f} + fusion {hit.fusion:.4f})" if hit.fusion else ""
        category = f"[{hit.metadata.category}] " if hit.metadata.category else ""
        print(f"{hit.rank:3d}. {hit.item_id}  score {hit.score:.4f}{fusion}  {category}{text}")


@_reports_errors
def _cmd_search(args: argparse.Namespace) -> int:
    from unifashion.data.records import load_image
    from unifashion.pipelines import SearchPipeline

    if args.query and args.text:
        raise ValueError("give the text once: as the argument or with --text")
    text = args.query or args.text
    if text is None and args.image is None:
        raise ValueError("give a text (text -> images), --image (image -> texts) or both (composed search)")
    image = load_image(args.image) if args.image else None
    with SearchPipeline.open(_load_model(args.model), args.index, read_only=True) as pipeline:
        if image is None:
            hits = pipeline.text_to_images(text, args.top_k, category=args.category)
            query = {"task": "text_to_images", "text": text}
        elif text is None:
            text_hits = pipeline.image_to_texts(image, args.top_k)
            if args.json:
                print(json.dumps({"query": {"task": "image_to_texts", "image": args.image},
                                  "results": [h.to_dict() for h in text_hits]}, indent=2))
            for hit in [] if args.json else text_hits:
                shown = ", ".join(f"{s.item_id} ({s.style})" for s in hit.sources[:3])
                more = f" +{len(hit.sources) - 3} more" if len(hit.sources) > 3 else ""
                print(f"{hit.rank:3d}. score {hit.score:.4f}  {hit.text}  <- {shown}{more}")
            return 0
        else:
            hits = pipeline.composed(image, text, args.top_k, fusion=not args.no_fusion, category=args.category)
            query = {"task": "composed", "image": args.image, "text": text, "fusion": not args.no_fusion}
    if args.json:
        print(json.dumps({"query": query, "results": [h.to_dict() for h in hits]}, indent=2))
    else:
        _print_hits(hits)
    return 0


@_reports_errors
def _cmd_caption(args: argparse.Namespace) -> int:
    from unifashion.data.records import load_image
    from unifashion.pipelines import SearchPipeline

    images = [load_image(path) for path in args.images]
    pipeline = SearchPipeline(_load_model(args.model), None)
    for path, image in zip(args.images, images, strict=True):
        caption = pipeline.caption(image, args.style)
        print(f"{path}: {caption}" if len(args.images) > 1 else caption)
    return 0


@_reports_errors
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

        generated = generate_on_person(_load_model(args.model), images["person"], images["mask"], text=args.text,
                                       garment=images["image"], sketch=images["sketch"], steps=args.steps,
                                       scheduler=args.scheduler, guidance=args.guidance,
                                       generator=torch.Generator().manual_seed(args.seed))[0]
    else:
        pipeline = SearchPipeline(_load_model(args.model), None)
        generated = pipeline.generate(args.text, **images, steps=args.steps, scheduler=args.scheduler,
                                      guidance=args.guidance, seed=args.seed)[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    generated.save(out)
    print(f"generated {generated.size[0]}x{generated.size[1]} image (seed {args.seed}): {out.resolve()}")
    return 0


def _cmd_tryon(args: argparse.Namespace) -> int:
    import torch

    from unifashion.evaluation.tryon import TryOnEvalConfig
    from unifashion.experiments.tryon import TryOnRunConfig, run_tryon
    from unifashion.training.trainer import LoopConfig, OptimConfig
    from unifashion.training.tryon import TryOnTrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    loop = LoopConfig(steps=args.train_steps, batch_size=args.batch_size, seed=args.seed, checkpoint_every=100,
                      optim=OptimConfig(lr=args.lr, warmup_steps=min(50, max(1, args.train_steps // 10)),
                                        weight_decay=0.01))
    config = TryOnRunConfig(
        out=args.out, data=args.data, n_items=args.n_items, model=args.model, classifier=args.classifier,
        train=TryOnTrainConfig(train_unet=not args.paper_freezing, tryon_sketch=args.tryon_sketch, loop=loop),
        eval=TryOnEvalConfig(max_items=args.eval_items or None, steps=args.sample_steps, guidance=args.guidance,
                             seed=args.seed))
    report = run_tryon(config, progress=not args.no_progress)
    print(report["markdown"])
    print(f"results: {report['results']}\ngrid: {report['grid']}\ntimings (s): {report['timings']}")
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


@_reports_errors
def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from unifashion.serving.app import ServiceSettings, serve

    settings = ServiceSettings(max_upload_bytes=int(args.max_upload_mb * 2**20), max_top_k=args.max_top_k,
                               max_generation_steps=args.max_steps,
                               default_generation_steps=min(25, args.max_steps))
    if not Path(args.index, "catalogue.sqlite").is_file():
        raise FileNotFoundError(f"no catalogue index at {args.index}; build one with `unifashion index`")
    serve(args.index, args.model, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("UNIFASHION_API_KEY") or None, threads=args.threads,
          read_only=args.read_only, settings=settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifashion", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"unifashion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the main job on the embedded default: catalogue, default model (trained "
                                       "once, then cached), evaluation with baselines, pictures")
    demo.add_argument("--output", default="outputs/demo", help="folder for everything the demo writes")
    demo.add_argument("--n-items", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--catalogue-only", action="store_true", help="stop after the catalogue and its picture")
    demo.add_argument("--no-train", action="store_true", help="never train: skip what is not trained yet")
    demo.add_argument("--no-serve", action="store_true", help="do not serve the web page at the end (it is "
                                                               "served only when run from a terminal)")
    demo.add_argument("--eval-tasks", nargs="+", default=["cmr", "cir", "fic", "fig"],
                      choices=["cmr", "cir", "fic", "fig"])
    demo.set_defaults(func=_cmd_demo)

    tr = sub.add_parser("train", help="two-phase training (phase 1 pairs, phase 2 CIR triplets); resumable")
    tr.add_argument("--recipe", help="a training recipe JSON (default: the tiny preset's recipe)")
    tr.add_argument("--output-dir", help="run folder (default: runs/tiny); re-running resumes it")
    tr.add_argument("--catalogue", help="embedded catalogue folder (built if missing)")
    tr.add_argument("--fashion-mnist-pairs", type=int, help="Fashion-MNIST pairs added to phase 1")
    tr.add_argument("--scale", type=float, default=1.0, help="multiply the default recipe's step counts")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--print-recipe", action="store_true", help="print the recipe as JSON and exit")
    tr.add_argument("--install-as", help="when done, install the model under this trained tag (e.g. tiny-default)")
    tr.set_defaults(func=_cmd_train)

    tb = sub.add_parser("train-baseline", help="train the CLIP-style dual-encoder baseline (CLIP4CIR two stages)")
    tb.add_argument("--output-dir", default="runs/dual-encoder")
    tb.add_argument("--catalogue", default="outputs/demo/catalogue")
    tb.add_argument("--fashion-mnist-pairs", type=int, default=1000)
    tb.add_argument("--encoder-steps", type=int, default=400)
    tb.add_argument("--combiner-steps", type=int, default=300)
    tb.add_argument("--seed", type=int, default=0)
    tb.set_defaults(func=_cmd_train_baseline)

    ev = sub.add_parser("eval", help="evaluate CMR, CIR, FIC and FIG with baselines; writes results.json, "
                                     "a Markdown table and plots")
    ev.add_argument("--model", default="runs/default/phase2/final",
                    help="a saved UniFashion model folder or trained tag; 'none' evaluates only the baselines")
    ev.add_argument("--catalogue", default="outputs/demo/catalogue")
    ev.add_argument("--out", default="outputs/eval")
    ev.add_argument("--split", default="test")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--tasks", nargs="+", default=["cmr", "cir", "fic", "fig"], choices=["cmr", "cir", "fic", "fig"])
    ev.add_argument("--dual-encoder", help="a trained dual-encoder baseline folder")
    ev.add_argument("--two-stage-cir", help="a model trained by `unifashion cir-train` (CMR/CIR)")
    ev.add_argument("--ablation", action="append", help="NAME=PATH of another UniFashion checkpoint (CMR/CIR)")
    ev.add_argument("--classifier", default="runs/attribute-classifier",
                    help="the attribute classifier judging generated images (trained there if missing)")
    ev.add_argument("--inception", help="a local TorchScript Inception file for standard FID")
    ev.add_argument("--fig-items", type=int, default=64)
    ev.add_argument("--fig-steps", type=int, default=50)
    ev.add_argument("--fig-scheduler", default="pndm", choices=["pndm", "dpmsolver++"])
    ev.add_argument("--itm-rerank", type=int, default=50, help="ITM re-rank of the CIR top-k (0: off)")
    ev.add_argument("--cir-ks", type=int, nargs="+", default=[10, 50],
                    help="CIR recall cut-offs (Fashion-IQ reports 10 and 50; add 1 and 5 where those saturate)")
    ev.set_defaults(func=_cmd_eval)

    rs = sub.add_parser("results", help="work with results.json files")
    rs_sub = rs.add_subparsers(dest="results_command", required=True)
    rm = rs_sub.add_parser("merge", help="merge results.json files (e.g. one eval run per seed) into one table "
                                         "with mean ± std over seeds")
    rm.add_argument("files", nargs="+", help="results.json files")
    rm.add_argument("--out", required=True, help="folder for the merged results.json and results.md")
    rm.set_defaults(func=_cmd_results_merge)

    model_help = "a trained tag (tiny-default) or a folder written by save_pretrained"
    ix = sub.add_parser("index", help="embed a catalogue into a search index (resumable: re-run to continue "
                                      "or to add new items)")
    ix.add_argument("--catalogue", required=True,
                    help="an embedded catalogue folder, or an image folder with metadata.jsonl / metadata.csv "
                         "(id, path, category, caption...), or such a file")
    ix.add_argument("--split", help="only this split of an embedded catalogue (train, val, test)")
    ix.add_argument("--index", required=True, help="index folder (created, or added to)")
    ix.add_argument("--model", default="tiny-default", help=model_help)
    ix.add_argument("--batch-size", type=int, default=32)
    ix.add_argument("--ann", default="flat", choices=["flat", "ivf", "ivfpq"], help="FAISS stage of a new index")
    ix.add_argument("--no-progress", action="store_true", help="no progress bar")
    ix.set_defaults(func=_cmd_index)

    se = sub.add_parser("search", help="search an index: TEXT -> images; --image -> catalogue texts; "
                                       "--image with TEXT -> images (composed, with caption fusion)")
    se.add_argument("query", nargs="?", help="the text (or use --text)")
    se.add_argument("--text", help="the text: a description, or with --image the modification")
    se.add_argument("--image", help="query image (alone: image -> texts; with a text: composed search)")
    se.add_argument("--index", required=True)
    se.add_argument("--model", default="tiny-default", help=model_help)
    se.add_argument("--top-k", type=int, default=10)
    se.add_argument("--category", help="only items of this category")
    se.add_argument("--no-fusion", action="store_true", help="composed search without caption fusion")
    se.add_argument("--json", action="store_true", help="print the results as JSON")
    se.set_defaults(func=_cmd_search)

    ca = sub.add_parser("caption", help="caption images (short, professional or detailed)")
    ca.add_argument("images", nargs="+", metavar="IMAGE")
    ca.add_argument("--style", default="detailed", choices=["short", "professional", "detailed"])
    ca.add_argument("--model", default="tiny-default", help=model_help)
    ca.set_defaults(func=_cmd_caption)

    ge = sub.add_parser("generate", help="generate an image from text, image + text, or person + mask (+ sketch)")
    ge.add_argument("--text", help="what to draw, or how to change --image")
    ge.add_argument("--image", help="reference garment (composed generation)")
    ge.add_argument("--mask", help="try-on: mask image, white = region of --person to redraw")
    ge.add_argument("--sketch", help="try-on: garment sketch")
    ge.add_argument("--person", help="design / try-on: the person image (the result keeps its size)")
    ge.add_argument("--garment", help="try-on: the in-shop garment image (with --person and --mask)")
    ge.add_argument("--out", required=True, help="PNG file to write")
    ge.add_argument("--steps", type=int, default=50)
    ge.add_argument("--scheduler", default="pndm", choices=["pndm", "dpmsolver++"])
    ge.add_argument("--guidance", type=float, default=7.5)
    ge.add_argument("--seed", type=int, default=0)
    ge.add_argument("--model", default="tiny-default", help=model_help)
    ge.set_defaults(func=_cmd_generate)

    to = sub.add_parser("tryon", help="fashion design + virtual try-on end to end on embedded worn views: build "
                                      "the data, train (resumable), evaluate paired/unpaired with baselines")
    to.add_argument("--out", default="outputs/tryon", help="folder for data, checkpoints, model, results, grid")
    to.add_argument("--data", help="a VITON-HD/MGD-layout folder to use instead of building OUT/worn")
    to.add_argument("--n-items", type=int, default=2000, help="embedded catalogue size the worn views come from")
    to.add_argument("--model", default="tiny-default", help="model to start from")
    to.add_argument("--train-steps", type=int, default=800)
    to.add_argument("--batch-size", type=int, default=32, help="half design, half try-on")
    to.add_argument("--lr", type=float, default=2e-4)
    to.add_argument("--paper-freezing", action="store_true",
                    help="the paper's try-on choice: diffusion frozen, Q-Former + TSA_diff tuned (default: the "
                         "UNet and TSA_diff learn; our tiny UNet never saw a person)")
    to.add_argument("--tryon-sketch", action="store_true", help="give try-on the garment sketch channel too")
    to.add_argument("--eval-items", type=int, default=120, help="test persons per setting (0: all)")
    to.add_argument("--sample-steps", type=int, default=15, help="DPM-Solver++ steps per generated image")
    to.add_argument("--guidance", type=float, default=3.0)
    to.add_argument("--classifier", help="worn-garment attribute judge folder (default: OUT/worn-attribute-judge, "
                                         "trained there if missing)")
    to.add_argument("--seed", type=int, default=0)
    to.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    to.add_argument("--no-progress", action="store_true")
    to.set_defaults(func=_cmd_tryon)

    sv = sub.add_parser("serve", help="HTTP service and web page over an index (FastAPI + uvicorn)")
    sv.add_argument("--index", required=True)
    sv.add_argument("--model", default="tiny-default", help=model_help)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", help="key that adding/deleting items requires (default: $UNIFASHION_API_KEY)")
    sv.add_argument("--threads", type=int, default=1, help="torch threads (the model runs one request at a time)")
    sv.add_argument("--read-only", action="store_true", help="open the index read-only (no adding/deleting)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0)
    sv.add_argument("--max-top-k", type=int, default=100)
    sv.add_argument("--max-steps", type=int, default=100, help="cap on generation steps per request")
    sv.set_defaults(func=_cmd_serve)

    def mining_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--targets-per-reference", type=int, default=2, help="mined targets per reference image")
        p.add_argument("--min-changes", type=int, default=1, help="fewest attributes a mined pair differs in")
        p.add_argument("--max-changes", type=int, default=3, help="most attributes a mined pair differs in")
        p.add_argument("--agreement-quantile", type=float, default=0.2,
                       help="drop this lowest fraction of images by the captioner's own image-caption score (0: off)")
        p.add_argument("--no-pair-agreement", action="store_true",
                       help="keep pairs where an image scores the other's caption as high as its own")
        p.add_argument("--no-verify-edits", action="store_true",
                       help="keep edits the captioner's own ITC cannot confirm against a counterfactual caption")

    triplets = sub.add_parser("triplets", help="CIR triplets: mine them from images without annotations")
    tsub = triplets.add_subparsers(dest="triplets_command", metavar="TRIPLETS_COMMAND", required=True)
    mine = tsub.add_parser("mine", help="caption images, pair those differing in 1-3 attributes, write "
                                        "Fashion-IQ-style relative captions (our triplet JSONL format)")
    mine.add_argument("--images", required=True, help="a folder of images, an image folder with metadata.jsonl/csv, "
                                                      "or an embedded catalogue folder")
    mine.add_argument("--split", help="only this split of an embedded catalogue (e.g. train)")
    mine.add_argument("--out", required=True, help="the triplet file to write (.jsonl); a .report.json lands beside it")
    mine.add_argument("--model", default="tiny-default", help="the captioner: " + model_help)
    mine.add_argument("--batch-size", type=int, default=64)
    mine.add_argument("--seed", type=int, default=0)
    mining_options(mine)
    mine.set_defaults(func=_reports_errors(_cmd_triplets_mine))

    ct = sub.add_parser("cir-train", help="train the two-stage CIR recipe (encoders, then combiner) on the dual "
                                          "encoder, with sentence prompts and static negatives")
    ct.add_argument("--catalogue", default="outputs/demo/catalogue", help="its train split's images are the gallery")
    ct.add_argument("--triplets", nargs="+", help="triplet JSONL files, their split 'train' rows (default: the "
                                                  "catalogue's train triplets)")
    ct.add_argument("--output-dir", default="runs/two-stage-cir")
    ct.add_argument("--backbone", help="a trained dual-encoder folder (default: the cached dual-encoder-default)")
    ct.add_argument("--vision-path", help="paper preset: a local CLIP ViT directory (safetensors) as the vision "
                                          "tower at its own image size, CLIP normalisation; heads trained from scratch")
    ct.add_argument("--captioner", default="tiny-default", help="writes the sentence-level prompts: " + model_help)
    ct.add_argument("--stages", nargs="+", default=["encoders", "combiner"], choices=["encoders", "combiner"])
    ct.add_argument("--no-prompts", action="store_true", help="the relative caption alone as the text")
    ct.add_argument("--no-static-negatives", action="store_true", help="in-batch negatives only")
    ct.add_argument("--stage1-steps", type=int, default=60)
    ct.add_argument("--stage2-steps", type=int, default=400)
    ct.add_argument("--batch-size", type=int, default=32)
    ct.add_argument("--seed", type=int, default=0)
    ct.set_defaults(func=_reports_errors(_cmd_cir_train))

    cr = sub.add_parser("cir-recipe", help="the two-stage CIR recipe's experiment: mining + precision, training on "
                                           "annotated / mined / both, ablations, seeds, evaluation beside baselines")
    cr.add_argument("--out", default="outputs/cir-recipe")
    cr.add_argument("--catalogue", default="outputs/demo/catalogue")
    cr.add_argument("--heldout", default="outputs/heldout-catalogue", help="a second test catalogue, or 'none'")
    cr.add_argument("--captioner", default="tiny-default", help=model_help)
    cr.add_argument("--backbone", help="a trained dual-encoder folder (default: the cached dual-encoder-default)")
    cr.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cr.add_argument("--runs", nargs="+", help="some of the runs (default: all)")
    cr.add_argument("--stage1-steps", type=int, default=60)
    cr.add_argument("--stage2-steps", type=int, default=400)
    cr.add_argument("--no-unifashion", action="store_true", help="skip evaluating UniFashion beside the recipe")
    cr.add_argument("--seed", type=int, default=0, help="the mining seed")
    mining_options(cr)
    cr.set_defaults(func=_reports_errors(_cmd_cir_recipe))

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
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    # Nothing is ever downloaded; and the per-checkpoint "Loading weights" bars are noise here.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
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
