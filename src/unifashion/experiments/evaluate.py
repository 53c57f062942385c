"""``unifashion eval`` as a library call: which methods run, on which split, and the report.

:func:`run_evaluation` takes an :class:`EvalRunConfig` (the run: model, catalogue, baselines,
output folder, and the protocol's :class:`~unifashion.evaluation.runner.EvalConfig`), evaluates
random ranking, the given baselines and ablations, then the model, all on the same split, and
writes the report (:func:`unifashion.evaluation.report.write_report`) with ``run_config.json``,
the config it ran with, beside it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.runner import EvalConfig
from unifashion.evaluation.split_data import SplitData
from unifashion.experiments import write_run_config


@dataclass
class EvalRunConfig:
    model: str = "runs/default/phase2/final"  # a saved UniFashion folder or trained tag; "none": baselines only
    catalogue: str = "outputs/demo/catalogue"
    # A Fashion-IQ root (captions/, image_splits/, images/) evaluated in place of the catalogue (CIR
    # only: Fashion-IQ has no per-image captions); eval.split "val" and eval.cir_gallery name the protocol.
    fashion_iq: str | None = None
    out: str = "outputs/eval"
    dual_encoder: str | None = None  # a trained dual-encoder baseline folder
    two_stage_cir: str | None = None  # a model trained by `unifashion cir-train` (CMR/CIR)
    ablations: dict[str, str] = field(default_factory=dict)  # name -> another UniFashion checkpoint (CMR/CIR)
    classifier: str = "runs/attribute-classifier"  # judges generated images (trained there if missing)
    inception: str | None = None  # a local TorchScript Inception file (inception-2015-12-05.pt) for standard FID
    clip: str | None = None  # a local CLIP folder (transformers layout) for CLIP-S
    # A data spec of one source (unifashion.data.spec), e.g. "fashiongen:FG_validation.h5" or
    # "fashioniq:FIQ?split=val"; it replaces the catalogue. Its split: the source's ?split=, else the
    # kind's test split (the embedded catalogue: eval.split).
    data: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "no"  # no | bf16 | fp16: autocast for the models' forward passes
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"precision must be no, bf16 or fp16, got {self.precision!r}")


@dataclass
class EvalRunResult:
    table: ResultTable
    paths: dict[str, Path]  # report file name -> path

    def summary_lines(self) -> list[str]:
        """What the command prints: the table, then every file written."""
        return [self.table.to_markdown(), *(f"{name}: {path.resolve()}" for name, path in self.paths.items())]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> a GPU when there is one; ``cuda`` without one is an error saying so."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision ("no": none); fp16 needs a GPU."""
    if precision == "no":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast needs a GPU; on the CPU use bf16 or no")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def load_split(config: EvalRunConfig) -> tuple[SplitData, EvalConfig, list[str]]:
    """The split to evaluate (the ``data`` spec's source, or the embedded catalogue), the protocol
    config adjusted to it (split name; tasks the data cannot support dropped; the CMR texts' style
    where the data has only its own), and notes saying what was adjusted."""
    from unifashion.data.records import CAPTION_STYLES

    cfg = config.eval
    if not config.data:
        from unifashion.data.synthetic.catalogue import load_catalogue

        return SplitData(load_catalogue(config.catalogue), cfg.split), cfg, []
    from unifashion.data.spec import DataSpecError, default_split, load_source, parse_data_spec

    sources = parse_data_spec(config.data)
    if len(sources) != 1 or sources[0].weight is not None:
        raise DataSpecError(f"evaluation reads one source without a weight; got {config.data!r}")
    source = sources[0]
    split = source.options.get("split") or (cfg.split if source.kind == "embedded"
                                            else default_split(source.kind, training=False))
    loaded = load_source(source, split)
    data = SplitData.from_records(loaded.items, loaded.triplets, split)
    notes, tasks = [], list(cfg.tasks)
    if "phrasing" in tasks and source.kind != "embedded":
        tasks.remove("phrasing")
        notes.append("phrasing not run: it asks for the embedded catalogue's attributes.")
    uncaptioned = len(loaded.items) - len(loaded.captioned)
    if uncaptioned:
        dropped = [t for t in tasks if t in ("cmr", "fic", "fig")]
        tasks = [t for t in tasks if t not in dropped]
        if dropped:
            notes.append(f"{', '.join(dropped)} not run: {uncaptioned} of {len(loaded.items)} items have no caption.")
    if not loaded.triplets and "cir" in tasks:
        tasks.remove("cir")
        notes.append(f"cir not run: {source.kind} has no CIR triplets.")
    if not tasks:
        raise ValueError(f"nothing to evaluate on {source.describe()}: {' '.join(notes)}")
    text_style = cfg.cmr_text_style
    if "cmr" in tasks and not all(r.captions.get(text_style) for r in data.items):
        text_style = source.style
        notes.append(f"CMR texts: the {source.style} captions (the style of {source.kind}).")
    fic_styles = tuple(s for s in cfg.fic_styles if s in CAPTION_STYLES and all(r.captions.get(s) for r in data.items))
    if "fic" in tasks and not fic_styles:
        tasks.remove("fic")
    cfg = replace(cfg, split=split, tasks=tuple(tasks), cmr_text_style=text_style, fic_styles=fic_styles or
                  cfg.fic_styles)
    notes.insert(0, f"Data: `{source.describe()}`, split {split} ({len(data.items)} items, "
                    f"{len(data.triplets)} CIR triplets).")
    return data, cfg, notes


def run_evaluation(config: EvalRunConfig) -> EvalRunResult:
    """Evaluate every method ``config`` names on one split and write the report to ``config.out``."""
    from unifashion.evaluation.report import write_report
    from unifashion.evaluation.runner import (
        EvalArtifacts,
        evaluate_dual_encoder,
        evaluate_random,
        evaluate_unifashion,
    )
    from unifashion.models import UniFashion

    out = Path(config.out)
    write_run_config(config, out)
    if config.fashion_iq:
        cfg = replace(config.eval, tasks=("cir",), split="val" if config.eval.split == "test" else config.eval.split)
        data, data_notes = SplitData.from_fashion_iq(config.fashion_iq, cfg.split), []
    else:
        data, cfg, data_notes = load_split(config)
    if cfg.same_product == "dedup":
        data = data.first_image_per_product()
    device = resolve_device(config.device)
    table, art = ResultTable(), EvalArtifacts()
    classifier = fid_features = clip_scorer = None
    if "fig" in cfg.tasks and not config.data:  # the attribute judge knows the embedded attributes only
        from unifashion.evaluation.attribute_classifier import load_or_train_classifier

        classifier = load_or_train_classifier(config.classifier)
    if "fig" in cfg.tasks:
        from unifashion.evaluation.features import CLIPScorer, EffLiteFeatures, TorchScriptFeatures

        fid_features = TorchScriptFeatures(config.inception) if config.inception else EffLiteFeatures()
        clip_scorer = CLIPScorer(config.clip) if config.clip else None
    evaluate_random(data, cfg, table, art)
    if config.dual_encoder:
        from unifashion.models.dual_encoder import DualEncoder

        with autocast(device, config.precision):
            evaluate_dual_encoder(DualEncoder.from_pretrained(config.dual_encoder).to(device), data, cfg, table, art)
    if config.two_stage_cir:  # the two-stage CIR recipe (issue 6); prompts from the model's captions
        from unifashion.pipelines.mining import caption_collection
        from unifashion.training.two_stage_cir import load_two_stage_cir

        recipe_model, method = load_two_stage_cir(config.two_stage_cir)
        prompts = caption_collection(UniFashion.from_pretrained(config.model), data.items)[0] \
            if method.sentence_prompts else None
        evaluate_dual_encoder(recipe_model, data, cfg, table, art, method="two-stage CIR",
                              combiners=(method.combiner,), reference_captions=prompts)
    if config.ablations:
        ablation_cfg = replace(cfg, tasks=tuple(t for t in cfg.tasks if t in ("cmr", "cir")), itm_rerank_k=0)
        for name, path in config.ablations.items():
            with autocast(device, config.precision):
                evaluate_unifashion(UniFashion.from_pretrained(path).to(device), data, ablation_cfg, table, art,
                                    method=name)
    if config.model != "none":  # "none": only the baselines (e.g. more baseline seeds)
        model = UniFashion.from_pretrained(config.model).to(device)
        with autocast(device, config.precision):
            evaluate_unifashion(model, data, cfg, table, art, classifier=classifier, fid_features=fid_features,
                                clip_scorer=clip_scorer)
    if config.fashion_iq:
        where = f"Fashion-IQ: `{config.fashion_iq}`"
    else:
        where = f"data: `{config.data}`" if config.data else f"catalogue: `{config.catalogue}`"
    notes = [f"Model: `{config.model}`; {where} ({len(data.items)} {cfg.split} items, "
             f"{len(data.triplets)} CIR triplets); device {device}, precision {config.precision}.", *data_notes,
             "FID/KID (torchmetrics') use EfficientNet-Lite0 pooled features (FID-EffLite0), not Inception, unless "
             "--inception names a local file (then FID-Inception); the image-text score is UniFashion's "
             "own ITC score; CLIP-S is reported only with --clip FOLDER (a local CLIP)."]
    return EvalRunResult(table, write_report(table, art, out, cfg, notes))
