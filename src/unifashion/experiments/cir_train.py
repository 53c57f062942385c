"""One model of the two-stage CIR recipe (``unifashion cir-train``) and triplet mining from
unannotated images (``unifashion triplets mine``).

:func:`train_cir` trains the recipe (:mod:`unifashion.training.two_stage_cir`) on a catalogue's
train images with its own or mined triplets, from the trained dual-encoder baseline or, in the
paper preset, from a CLIP ViT in a local folder; :func:`mine_triplet_file` captions a folder of
images, mines Fashion-IQ-style triplets from the captions and writes them with a report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from unifashion.data.mining import MiningConfig
from unifashion.experiments import write_run_config
from unifashion.training.two_stage_cir import TwoStageCIRConfig


def backbone_path(backbone: str | None) -> Path:
    """``backbone``, or the cached ``dual-encoder-default`` when None (an error when it is not trained)."""
    if backbone:
        return Path(backbone)
    from unifashion.models import pretrained

    tag = "dual-encoder-default"
    if not pretrained.is_available(tag):
        raise FileNotFoundError(f"no trained dual encoder at {pretrained.trained_model_dir(tag)} (nor packaged); "
                                f"train it with `{pretrained.TRAINED_TAGS[tag]['how']}` (or `make demo`), "
                                f"or give --backbone")
    return pretrained.locate(tag)


@dataclass
class CIRTrainConfig:
    catalogue: str = "outputs/demo/catalogue"  # its train split's images are the gallery
    triplets: tuple[str, ...] = ()  # triplet JSONL files, their 'train' rows; empty: the catalogue's train triplets
    output_dir: str = "runs/two-stage-cir"
    backbone: str | None = None  # a trained dual-encoder folder; None: the cached dual-encoder-default
    vision_path: str | None = None  # paper preset: a local CLIP ViT folder as the vision tower (heads untrained)
    captioner: str = "tiny-default"  # writes the sentence-level prompts
    method: TwoStageCIRConfig = field(default_factory=TwoStageCIRConfig)

    def __post_init__(self):
        self.triplets = tuple(self.triplets)


@dataclass
class CIRTrainResult:
    model: Path  # the trained model's folder
    triplets: int  # training triplets


def train_cir(config: CIRTrainConfig, progress: bool = True) -> CIRTrainResult:
    """Train one model of the recipe as ``config`` says; ``run_config.json`` lands in its output folder."""
    from unifashion.data.synthetic.catalogue import load_catalogue, read_triplets_jsonl
    from unifashion.models import UniFashion
    from unifashion.models.dual_encoder import DualEncoder
    from unifashion.pipelines.mining import caption_collection
    from unifashion.training.data import ImageBank
    from unifashion.training.two_stage_cir import train_two_stage_cir

    write_run_config(config, config.output_dir)
    catalogue = load_catalogue(config.catalogue)
    items = catalogue.item_records("train")
    ids = {r.item_id for r in items}
    triplets = [t for f in config.triplets for t in read_triplets_jsonl(f, ids, split="train")] \
        if config.triplets else catalogue.triplet_records("train")
    if not triplets:
        raise ValueError("no training triplets: give --triplets files or a catalogue with train triplets")
    captions = None
    if config.method.sentence_prompts:
        captions, _ = caption_collection(UniFashion.from_pretrained(config.captioner), items)
    if config.vision_path:  # the paper preset: a CLIP ViT from a local directory; the heads start untrained
        model = DualEncoder.from_clip_folder(config.vision_path)
    else:
        model = DualEncoder.from_pretrained(backbone_path(config.backbone))
    bank = ImageBank(items, model, progress=progress, with_generation_images=False)
    final = train_two_stage_cir(model, triplets, bank, config.output_dir, config.method, captions, progress=progress)
    return CIRTrainResult(final, len(triplets))


@dataclass
class MiningRun:
    report: dict  # what ``.report.json`` holds: config, counts per filter, triplets, precision where measured
    report_file: Path
    images: int  # images captioned


def mine_triplet_file(images: str | Path, out: str | Path, model_name: str, config: MiningConfig,
                      split: str | None = None) -> MiningRun:
    """Caption the images of ``images`` (only ``split`` of an embedded catalogue, when given) with
    the model ``model_name``, mine triplets, write them to ``out`` (.jsonl) and the report beside
    it (``.report.json``). Where the images carry
    ground-truth attributes (the embedded catalogue) the report measures the mined captions'
    precision."""
    from unifashion.data.mining import collection_records, mining_precision
    from unifashion.data.synthetic.catalogue import triplet_row, write_triplets_jsonl
    from unifashion.models import UniFashion
    from unifashion.pipelines.mining import mine_collection

    records = collection_records(images, split)
    out = Path(out)
    if out.suffix != ".jsonl":
        raise ValueError(f"--out must name a .jsonl file, got {out}")
    model = UniFashion.from_pretrained(model_name)
    start = time.perf_counter()
    mined, _, _ = mine_collection(records, model, config)
    write_triplets_jsonl(out, (triplet_row(t, split or "train", source="mined") for t in mined.triplets))
    report = {**mined.report(), "captioner": model_name, "images": str(images),
              "seconds": round(time.perf_counter() - start, 1)}
    truth = {r.item_id: r.attributes for r in records}
    if all(truth.values()) and mined.triplets:  # ground-truth attributes (the embedded catalogue): measure
        report["precision"] = mining_precision(mined.triplets, mined.attributes, truth)
    report_path = out.with_suffix(".report.json")
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    return MiningRun(report, report_path, len(records))
