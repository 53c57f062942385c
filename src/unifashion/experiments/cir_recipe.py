"""``unifashion cir-recipe``: the two-stage CIR recipe's experiment, end to end, in one command.

1. Caption the demo catalogue's train images and the test images of both evaluation catalogues
   with the pretrained captioner (UniFashion ``tiny-default``, detailed style).
2. Mine triplets from the demo train images alone (their annotations unused) and measure the
   mined captions' precision against the catalogue's ground-truth attributes.
3. Train the two-stage recipe (:mod:`unifashion.training.two_stage_cir`) from the pretrained dual
   encoder on annotated triplets, on mined triplets only, and on both; and the ablations of each
   idea on "both"; every run for each seed.
4. Evaluate every model on the Fashion-IQ CIR protocol on the test split of the demo catalogue
   and of the held-out catalogue, beside random ranking, the dual-encoder baseline (CLIP4CIR as
   trained by ``train-baseline``) and UniFashion, all in the same run on the same splits.

Which stage-1 encoders are shared, exactly: the "no stage 2" row evaluates the full run's model
(annotated + mined) with the sum combiner, i.e. its stage-1 encoders before any combiner; stage 2
never changes the encoders, so this is the same stage 1, not a re-run. Every other row trains its
own stage 1 (or none, for "no stage 1").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from unifashion.configuration import to_dict
from unifashion.data.mining import MiningConfig, mine_triplets, mining_precision
from unifashion.data.synthetic.catalogue import load_catalogue, read_triplets_jsonl, triplet_row, write_triplets_jsonl
from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.runner import (
    EvalArtifacts,
    EvalConfig,
    evaluate_dual_encoder,
    evaluate_random,
    evaluate_unifashion,
)
from unifashion.evaluation.split_data import SplitData
from unifashion.experiments import write_run_config
from unifashion.experiments.cir_train import backbone_path
from unifashion.pipelines.mining import CaptionScorer, caption_collection
from unifashion.training.two_stage_cir import TwoStageCIRConfig, load_two_stage_cir, train_two_stage_cir

METHOD = "two-stage CIR"


@dataclass
class CIRRecipeConfig:
    catalogue: str = "outputs/demo/catalogue"
    heldout_catalogue: str | None = "outputs/heldout-catalogue"
    captioner: str = "tiny-default"
    backbone: str | None = None  # a trained dual-encoder folder; None: the cached dual-encoder-default
    seeds: tuple[int, ...] = (0, 1, 2)
    mining: MiningConfig = field(default_factory=MiningConfig)
    method: TwoStageCIRConfig = field(default_factory=TwoStageCIRConfig)
    runs: tuple[str, ...] = ("annotated", "mined", "both", "both-no-prompts", "both-no-static-negatives",
                             "both-no-stage1")
    evaluate_unifashion: bool = True

    def __post_init__(self):
        self.seeds = tuple(self.seeds)
        self.runs = tuple(self.runs)
        unknown = [r for r in self.runs if r not in RUNS]
        if unknown:
            raise ValueError(f"unknown runs {unknown}; choose from {sorted(RUNS)}")


#: name -> (training data, changes to the full recipe, the row's label)
RUNS: dict[str, tuple[str, dict, str]] = {
    "annotated": ("annotated", {}, f"{METHOD} [annotated]"),
    "mined": ("mined", {}, f"{METHOD} [mined]"),
    "both": ("both", {}, f"{METHOD} [annotated + mined]"),
    "both-no-prompts": ("both", {"sentence_prompts": False}, f"{METHOD} [annotated + mined] - sentence prompts"),
    "both-no-static-negatives": ("both", {"static_negatives": False},
                                 f"{METHOD} [annotated + mined] - static negatives"),
    "both-no-stage1": ("both", {"stages": ("combiner",)}, f"{METHOD} [annotated + mined] - stage 1"),
}
NO_STAGE2_LABEL = f"{METHOD} [annotated + mined] - stage 2"
NOT_FILTERS = ("images", "images_kept", "pairs_drawn", "triplets")  # mining counts that are not filters


def _captions(model, records, path: Path) -> tuple[dict[str, str], CaptionScorer]:
    """The captioner's captions of ``records`` and its scorer, cached in ``path`` (JSON) and beside
    it (``.safetensors``)."""
    scores_path = path.with_suffix(".safetensors")
    if path.is_file() and scores_path.is_file():
        captions = json.loads(path.read_text())
        if set(captions) >= {r.item_id for r in records}:
            return captions, CaptionScorer.load(scores_path, model.encode_text)
    captions, scorer = caption_collection(model, records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(captions, indent=1, sort_keys=True))
    scorer.save(scores_path)
    return captions, scorer


def run_cir_recipe(out_dir: str | Path, config: CIRRecipeConfig | None = None, progress: bool = True) -> ResultTable:
    """Run the experiment (see the module docstring); finished parts are reused when run again."""
    from unifashion.models import UniFashion
    from unifashion.models.dual_encoder import DualEncoder
    from unifashion.training.data import ImageBank

    config = config or CIRRecipeConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(config, out)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    catalogue = load_catalogue(config.catalogue)
    train_items = catalogue.item_records("train")
    annotated = catalogue.triplet_records("train")
    captioner = UniFashion.from_pretrained(config.captioner).eval()
    captions, scorer = _captions(captioner, train_items, out / "captions" / "train.json")
    timings["caption train images (s)"] = round(time.perf_counter() - started, 1)

    # -- mining, and its precision against the ground truth
    t0 = time.perf_counter()
    mined = mine_triplets(captions, scorer.agreement(), config.mining, pair_score=scorer,
                          edit_verifier=scorer.verify_edits)
    truth = {r.item_id: r.attributes for r in train_items}
    mined_file = write_triplets_jsonl(out / "mined" / "triplets.jsonl",
                                      (triplet_row(t, "train", source="mined") for t in mined.triplets))
    report = {**mined.report(), "file": str(mined_file),
              "precision": mining_precision(mined.triplets, mined.attributes, truth)}
    unfiltered = mine_triplets(captions, None, replace(config.mining, agreement_quantile=0.0, pair_agreement=False,
                                                       verify_edits=False))
    report["precision_without_agreement_filter"] = mining_precision(unfiltered.triplets, unfiltered.attributes,
                                                                    truth)
    report["counts_without_agreement_filter"] = unfiltered.counts
    (out / "mined" / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    timings["mine (s)"] = round(time.perf_counter() - t0, 2)
    mined_triplets = read_triplets_jsonl(mined_file, {r.item_id for r in train_items})  # as a user would load it
    annotated_pairs = {(t.reference_id, t.target_id) for t in annotated}
    mined_new = [t for t in mined_triplets if (t.reference_id, t.target_id) not in annotated_pairs]
    data = {"annotated": annotated, "mined": mined_triplets, "both": annotated + mined_new}

    # -- training
    backbone = backbone_path(config.backbone)
    model = DualEncoder.from_pretrained(backbone)
    bank = ImageBank(train_items, model, progress=progress, with_generation_images=False)
    trained: dict[tuple[str, int], Path] = {}
    t0 = time.perf_counter()
    for run in config.runs:
        data_name, changes, _ = RUNS[run]
        for seed in config.seeds:
            method = replace(config.method, seed=seed, **changes)
            model = DualEncoder.from_pretrained(backbone)
            trained[(run, seed)] = train_two_stage_cir(model, data[data_name], bank, out / "runs" / f"{run}-seed{seed}",
                                                       method, captions, progress=progress)
    timings["train all runs (s)"] = round(time.perf_counter() - t0, 1)

    # -- evaluation, every method on the same splits
    tables: dict[str, ResultTable] = {}
    splits = [("demo", config.catalogue)]
    if config.heldout_catalogue:
        splits.append(("heldout", config.heldout_catalogue))
    t0 = time.perf_counter()
    for split_name, root in splits:
        table = tables[split_name] = ResultTable()
        split = SplitData(load_catalogue(root), "test")
        split_captions, _ = _captions(captioner, split.items, out / "captions" / f"{split_name}-test.json")
        baseline = DualEncoder.from_pretrained(backbone).eval()
        with torch.no_grad():
            vision = torch.cat([baseline.vision_features(baseline.processor.preprocess_images(split.images[s:s + 64]))
                                for s in range(0, len(split.images), 64)])
        for seed in config.seeds:
            cfg = EvalConfig(split=f"test ({split_name}: {root})", seed=seed, tasks=("cir",), itm_rerank_k=0,
                             cir_ks=(1, 10, 50))
            art = EvalArtifacts()
            evaluate_random(split, cfg, table, art)
            if seed == config.seeds[0]:  # trained once, deterministic: evaluated once
                evaluate_dual_encoder(baseline, split, cfg, table, art, vision_features=vision)
                if config.evaluate_unifashion:
                    evaluate_unifashion(captioner, split, cfg, table, art)
            for run in config.runs:
                model, method = load_two_stage_cir(trained[(run, seed)])
                evaluate_dual_encoder(model, split, cfg, table, art, method=RUNS[run][2],
                                      combiners=(method.combiner,),
                                      reference_captions=split_captions if method.sentence_prompts else None,
                                      vision_features=vision)
                if run == "both":
                    evaluate_dual_encoder(model, split, cfg, table, art, method=NO_STAGE2_LABEL, combiners=("sum",),
                                          reference_captions=split_captions, vision_features=vision)
    timings["evaluate (s)"] = round(time.perf_counter() - t0, 1)
    timings["total (s)"] = round(time.perf_counter() - started, 1)
    write_cir_recipe_report(tables, out, config, report, timings, trained)
    everything = ResultTable()
    for table in tables.values():
        everything.extend(table)
    return everything


def summary_markdown(table: ResultTable) -> str:
    """One row per method: the category-averaged recalls, mean ± std over seeds (n = seeds)."""
    import numpy as np

    metrics = ["avg_R@1", "avg_R@10", "avg_R@50", "avg_(R@10+R@50)/2"]
    values: dict[str, dict[str, list[float]]] = {}
    for r in table.rows:
        if r.task == "cir" and r.metric in metrics:
            values.setdefault(r.method, {}).setdefault(r.metric, []).append(r.value)
    lines = ["| method | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for method, per in values.items():
        n = len(next(iter(per.values())))
        cells = [(f"{np.mean(per[m]):.2f} ± {np.std(per[m]):.2f}" if n > 1 else f"{per[m][0]:.2f}")
                 if m in per else "–" for m in metrics]
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mining_markdown(report: dict) -> list[str]:
    p, q = report["precision"], report["precision_without_agreement_filter"]
    names = [k for k in p["claim_precision"] if k != "overall"]
    lines = ["## Mined triplets: precision against the ground-truth attributes", "",
             f"{report['triplets']} triplets from {report['counts']['images']} images; filters dropped "
             + ", ".join(f"{k}: {v}" for k, v in report["counts"].items() if k not in NOT_FILTERS) + ".",
             "", "| | with the agreement filters | without them |", "|---|---|---|",
             f"| triplets | {p['triplets']} | {q['triplets']} |",
             f"| triplet precision (every stated edit right, none missing) | {p['triplet_precision']:.1f} | "
             f"{q['triplet_precision']:.1f} |",
             f"| claim precision, overall | {p['claim_precision']['overall']:.1f} | "
             f"{q['claim_precision']['overall']:.1f} |"]
    for name in names:
        lines.append(f"| claim precision, {name} ({p['claims_per_attribute'][name]} claims) | "
                     f"{p['claim_precision'][name]:.1f} | {q['claim_precision'].get(name, float('nan')):.1f} |")
    lines += ["", "Captioner attribute accuracy over the mined items (parsed caption vs. truth, %): "
              + ", ".join(f"{k} {v:.1f}" for k, v in p["caption_accuracy"].items()) + ".", ""]
    return lines


def write_cir_recipe_report(tables: dict[str, ResultTable], out: Path, config: CIRRecipeConfig,
                            mining_report: dict, timings: dict, trained: dict) -> None:
    everything = ResultTable()
    for table in tables.values():
        everything.extend(table)
    everything.save_json(out / "results.json")
    train_seconds: dict[str, list[float]] = {}
    for (run, _), path in trained.items():
        info = json.loads((path / "two_stage_cir.json").read_text())
        train_seconds.setdefault(run, []).append(sum(info["train_seconds"].values()))
    md = ["# The two-stage CIR recipe: mined triplets, two stages, sentence prompts, static negatives", "",
          f"Seeds {list(config.seeds)}; n = the number of seeds a value averages (mean ± std). The dual-encoder "
          "baseline and UniFashion are single trained models, evaluated once. R@1 is added to Fashion-IQ's "
          "R@10/R@50 because R@10/R@50 saturate on these catalogues. Every query is kept.", "",
          f"Recipe: `{json.dumps(to_dict(config.method))}`", "",
          *_mining_markdown(mining_report)]
    for name, table in tables.items():
        split = table.rows[0].split if table.rows else name
        md += [f"## CIR, {split}: averages over categories", "", summary_markdown(table), ""]
    md += ["## Training time per run (s, mean over seeds)", "",
           ", ".join(f"{run}: {sum(v) / len(v):.0f}" for run, v in train_seconds.items()), "",
           "## Timings", "", ", ".join(f"{k}: {v}" for k, v in timings.items()), "",
           "## Per category", ""]
    for table in tables.values():
        md += [table.to_markdown(), ""]
    (out / "results.md").write_text("\n".join(md))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
