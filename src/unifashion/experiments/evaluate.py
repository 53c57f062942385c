"""``unifashion eval`` as a library call: which methods run, on which split, and the report.

:func:`run_evaluation` takes an :class:`EvalRunConfig` (the run: model, catalogue, baselines,
output folder, and the protocol's :class:`~unifashion.evaluation.runner.EvalConfig`), evaluates
random ranking, the given baselines and ablations, then the model, all on the same split, and
writes the report (:func:`unifashion.evaluation.report.write_report`) with ``run_config.json``,
the config it ran with, beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.runner import EvalConfig
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
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class EvalRunResult:
    table: ResultTable
    paths: dict[str, Path]  # report file name -> path

    def summary_lines(self) -> list[str]:
        """What the command prints: the table, then every file written."""
        return [self.table.to_markdown(), *(f"{name}: {path.resolve()}" for name, path in self.paths.items())]


def run_evaluation(config: EvalRunConfig) -> EvalRunResult:
    """Evaluate every method ``config`` names on one split and write the report to ``config.out``."""
    from unifashion.data.synthetic.catalogue import load_catalogue
    from unifashion.evaluation.report import write_report
    from unifashion.evaluation.runner import (
        EvalArtifacts,
        SplitData,
        evaluate_dual_encoder,
        evaluate_random,
        evaluate_unifashion,
    )
    from unifashion.models import UniFashion

    out = Path(config.out)
    write_run_config(config, out)
    cfg = config.eval
    if config.fashion_iq:
        cfg = replace(cfg, tasks=("cir",), split="val" if cfg.split == "test" else cfg.split)
        data = SplitData.from_fashion_iq(config.fashion_iq, cfg.split)
    else:
        data = SplitData(load_catalogue(config.catalogue), cfg.split)
    table, art = ResultTable(), EvalArtifacts()
    classifier = fid_features = clip_scorer = None
    if "fig" in cfg.tasks:
        from unifashion.evaluation.attribute_classifier import load_or_train_classifier
        from unifashion.evaluation.features import CLIPScorer, EffLiteFeatures, TorchScriptFeatures

        classifier = load_or_train_classifier(config.classifier)
        fid_features = TorchScriptFeatures(config.inception) if config.inception else EffLiteFeatures()
        clip_scorer = CLIPScorer(config.clip) if config.clip else None
    evaluate_random(data, cfg, table, art)
    if config.dual_encoder:
        from unifashion.models.dual_encoder import DualEncoder

        evaluate_dual_encoder(DualEncoder.from_pretrained(config.dual_encoder), data, cfg, table, art)
    if config.two_stage_cir:  # the two-stage CIR recipe (issue 6); prompts from the model's captions
        from unifashion.data.mining import caption_collection
        from unifashion.training.two_stage_cir import load_two_stage_cir

        recipe_model, method = load_two_stage_cir(config.two_stage_cir)
        prompts = caption_collection(UniFashion.from_pretrained(config.model), data.items)[0] \
            if method.sentence_prompts else None
        evaluate_dual_encoder(recipe_model, data, cfg, table, art, method="two-stage CIR",
                              combiners=(method.combiner,), reference_captions=prompts)
    if config.ablations:
        ablation_cfg = replace(cfg, tasks=tuple(t for t in cfg.tasks if t in ("cmr", "cir")), itm_rerank_k=0)
        for name, path in config.ablations.items():
            evaluate_unifashion(UniFashion.from_pretrained(path), data, ablation_cfg, table, art, method=name)
    if config.model != "none":  # "none": only the baselines (e.g. more baseline seeds)
        model = UniFashion.from_pretrained(config.model)
        evaluate_unifashion(model, data, cfg, table, art, classifier=classifier, fid_features=fid_features,
                            clip_scorer=clip_scorer)
    source = f"Fashion-IQ: `{config.fashion_iq}`" if config.fashion_iq else f"catalogue: `{config.catalogue}`"
    notes = [f"Model: `{config.model}`; {source} ({len(data.items)} {cfg.split} items, "
             f"{len(data.triplets)} CIR triplets).",
             "FID/KID use EfficientNet-Lite0 pooled features (FID-EffLite0), not Inception, unless --inception "
             "names a local file (then torchmetrics computes FID-Inception); the image-text score is UniFashion's "
             "own ITC score; CLIP-S is reported only with --clip FOLDER (a local CLIP)."]
    return EvalRunResult(table, write_report(table, art, out, cfg, notes))
