"""The two-phase training recipe: which stages run, on which data, and in what order.

A recipe is data (JSON, or :class:`TrainRecipe`); :func:`run_recipe` carries it out. Each stage
writes its own folder under ``output_dir`` with checkpoints, ``losses.jsonl`` and TensorBoard
logs, and ends by saving the whole model to ``STAGE/final``. Re-running a recipe skips finished
stages and resumes an interrupted one from its last checkpoint, so a long run can be stopped
and continued at any point.

The default recipe for the tiny preset follows the paper's phases, with one stage the paper does
not need (the tiny preset's VAE starts random and is trained first):

1. phase 1, stage ``qformer``: Q-Former + ITC/ITM heads on image-caption pairs (L_ITC + L_ITM);
2. phase 1, stage ``autoencoder``: the VAE alone (reconstruction + KL);
3. phase 1, stage ``generators``: Q-Former frozen; TSA_llm + LLM and TSA_diff + UNet learn
   (L_ITG + L_q2I);
4. captions of every training image by the model itself (Z_C of caption fusion);
5. phase 2: LLM and diffusion frozen; Q-Former + adapters learn on CIR triplets
   (L_cir + L_ITG + L_q2I).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unifashion import configuration
from unifashion.data.records import ItemRecord, TripletRecord
from unifashion.objectives.phases import PHASES, check_groups, check_terms, phase_of
from unifashion.training.data import ImageBank, PairDataset, TripletTrainDataset
from unifashion.training.phase_objective import PhaseObjective
from unifashion.training.static_negatives import StaticNegativesObjective, unifashion_gallery_bank
from unifashion.training.trainer import LoopConfig, OptimConfig, latest_checkpoint, train


@dataclass
class DataSpec:
    """The training data: a ``--data`` spec of real datasets (:mod:`unifashion.data.spec`), or the
    embedded catalogue (built if missing) with optional Fashion-MNIST pairs."""

    catalogue: str = "outputs/catalogue"
    n_items: int = 2000
    catalogue_seed: int = 0
    fashion_mnist_pairs: int = 0
    fashion_mnist_path: str | None = None
    target_caption_style: str = "detailed"
    # A data spec, e.g. "fashiongen:FG.h5@0.5,fashion200k:F200K@0.3,fashioniq:FIQ@0.2"; when given it
    # replaces the embedded catalogue: phase 1 trains on its sources' captioned images (weighted),
    # phase 2 on its triplets.
    sources: str | None = None
    feature_cache: str | None = None  # folder of the frozen-feature caches (default: OUTPUT_DIR/feature-cache)
    cache_workers: int = 0  # image-reading processes while the feature cache is built


@dataclass
class StageSpec:
    name: str
    phase: int
    stage: str | None = None
    terms: list[str] | None = None  # None: the phase's terms (objectives.phases; ablations override)
    loop: LoopConfig = field(default_factory=LoopConfig)
    # The parameter groups that learn, in place of the phase's (objectives.phases): how a recipe
    # writes down its reading of the paper's freezing. None: the phase's.
    learns: list[str] | None = None

    def __post_init__(self):
        phase_of(self.phase, self.stage)  # the phase and stage UniFashion.set_phase knows
        if self.learns is not None:
            check_groups(self.learns)  # names checked when the recipe is read
        if self.terms:
            check_terms(self.terms)

    @classmethod
    def from_dict(cls, data: dict, where: str = "stage") -> StageSpec:
        return configuration.from_dict(cls, data, where)


@dataclass
class TrainRecipe:
    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: DataSpec = field(default_factory=DataSpec)
    stages: list[StageSpec] = field(default_factory=list)
    output_dir: str = "runs/tiny"
    seed: int = 0
    caption_fusion: bool = True
    # Phase 2 static negatives: every N steps, Z of all catalogue training images is recomputed and
    # joins ITC(e_cls, Z_T) as negatives (unifashion.training.static_negatives). 0: off (the paper).
    static_negatives_every: int = 0

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> TrainRecipe:
        return configuration.from_dict(cls, data, where)

    @classmethod
    def load(cls, path: str | Path) -> TrainRecipe:
        return configuration.load_json(cls, path, what="training recipe")

    def to_dict(self) -> dict:
        return configuration.to_dict(self)


def default_recipe(output_dir: str = "runs/tiny", scale: float = 1.0, seed: int = 0) -> TrainRecipe:
    """The tiny preset's recipe; ``scale`` multiplies every stage's step count (tests use 0.01)."""
    def loop(steps, batch, lr, warmup):
        return LoopConfig(steps=max(2, int(steps * scale)), batch_size=batch, seed=seed,
                          checkpoint_every=max(1, int(100 * scale)),
                          optim=OptimConfig(lr=lr, warmup_steps=max(1, int(warmup * scale))))
    # (steps, batch size, lr, warm-up) of each stage, in the order of objectives.phases.PHASES
    loops = {"phase1-qformer": (500, 32, 1e-4, 50), "phase1-autoencoder": (600, 32, 1e-3, 20),
             "phase1-generators": (350, 32, 5e-4, 30), "phase2": (150, 32, 1e-4, 15)}
    return TrainRecipe(output_dir=output_dir, seed=seed, data=DataSpec(fashion_mnist_pairs=1000), stages=[
        StageSpec(spec.name, spec.phase, spec.stage, loop=loop(*loops[spec.name]))
        for spec in PHASES if spec.name in loops])


def calibrate_latent_scale(model, bank: ImageBank, n: int = 256) -> float:
    """Set the diffusion's latent scaling to 1 / std of the trained VAE's latents (as Stable
    Diffusion's 0.18215 was chosen for its own VAE), so the UNet sees unit-variance latents."""
    diffusion = model.diffusion
    images = bank.generation(bank.ids[:n])
    with torch.no_grad():
        # the pixels as the VAE sees them in training and sampling (encode_images: 2x - 1)
        latents = diffusion.vae.encode((images * 2.0 - 1.0).to(model.device)).latent_dist.mode()
    scale = float(1.0 / latents.std().clamp_min(1e-3))
    diffusion.config.vae_scaling_factor = scale
    model.config.diffusion.vae_scaling_factor = scale
    return scale


@torch.no_grad()
def caption_bank(model, bank: ImageBank, batch_size: int = 64, progress: bool = True,
                 ids: list[str] | None = None) -> dict[str, str]:
    """The model's own caption of the images ``ids`` of the bank (default: all), Z_C of caption
    fusion, made by :meth:`UniFashion.fusion_captions` as evaluation and the index make it."""
    model.eval()
    ids = list(bank.ids if ids is None else ids)
    out: dict[str, str] = {}
    style = model.config.fusion_caption_style
    for start in tqdm(range(0, len(ids), batch_size), desc=f"captioning ({style})", disable=not progress):
        chunk = ids[start:start + batch_size]
        feats = bank.features(chunk).to(model.device)
        out.update(zip(chunk, model.fusion_captions(vision_features=feats), strict=True))
    return out


def load_training_data(spec: DataSpec):
    """``(catalogue, items, extra, triplets)``: the embedded catalogue (built if missing), its
    training items and triplets, and the Fashion-MNIST pairs the spec asks for."""
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files, load_catalogue

    root = Path(spec.catalogue)
    if not (root / "catalogue.json").is_file():
        build_catalogue_files(root, CatalogueConfig(n_items=spec.n_items, seed=spec.catalogue_seed), workers=2)
    catalogue = load_catalogue(root)
    items = catalogue.item_records("train")
    triplets = catalogue.triplet_records("train")
    extra = []
    if spec.fashion_mnist_pairs:
        from unifashion.data.fashion_mnist import load_fashion_mnist, make_cmr_items

        fm = load_fashion_mnist(spec.fashion_mnist_path, "train")
        extra = make_cmr_items(fm, size=catalogue.config.image_size, seed=spec.catalogue_seed,
                               limit=spec.fashion_mnist_pairs)
    return catalogue, items, extra, triplets


def with_caption_vocabulary(model: str, overrides: dict[str, Any] | None, records) -> dict[str, Any] | None:
    """``overrides`` plus the caption LM vocabulary built from the training captions, when ``model``
    is a preset whose caption LM asks for one (``caption_lm.vocabulary_size``) and has none yet."""
    from transformers import AutoTokenizer

    from unifashion.models.caption_lm import caption_vocabulary, instruction_texts
    from unifashion.models.config import UniFashionConfig, list_presets

    if model not in list_presets():
        return overrides  # a saved model keeps the vocabulary it was trained with
    lm_config = UniFashionConfig.from_preset(model, overrides).caption_lm
    if lm_config is None or lm_config.is_pretrained or not lm_config.vocabulary_size or lm_config.vocabulary:
        return overrides
    tokenizer = AutoTokenizer.from_pretrained(lm_config.resolved_tokenizer_path(), local_files_only=True)
    texts = [caption for record in records for caption in record.captions.values()]
    vocabulary = caption_vocabulary(tokenizer, texts + instruction_texts(lm_config), lm_config.vocabulary_size)
    return {**(overrides or {}), "caption_lm.vocabulary": vocabulary}
@dataclass
class TrainingData:
    """What a recipe trains on: phase-1 pairs (with per-item sampling weights for a weighted
    mixture, or None), phase-2 triplets, and every item either refers to, by id."""

    pairs: list[ItemRecord]
    pair_weights: list[float] | None
    triplets: list[TripletRecord]
    items: dict[str, ItemRecord]
    description: list[str]
    gallery_ids: list[str]  # the items of the sources with triplets (phase 2's static negatives)


def training_data(spec: DataSpec) -> TrainingData:
    """The recipe's data: the sources of ``spec.sources`` read for training, or the embedded
    catalogue with its Fashion-MNIST pairs (:func:`load_training_data`)."""
    if not spec.sources:
        _, items, extra, triplets = load_training_data(spec)
        pairs = items + list(extra)
        return TrainingData(pairs, None, triplets, {r.item_id: r for r in pairs},
                            [f"embedded:{spec.catalogue} ({len(items)} items, {len(triplets)} triplets)"
                             + (f" + {len(extra)} Fashion-MNIST pairs" if extra else "")],
                            [r.item_id for r in items])
    from unifashion.data.spec import default_split, load_source, mixture_weights, parse_data_spec

    loaded = []
    for source in parse_data_spec(spec.sources):
        loaded.append(load_source(source, source.options.get("split", default_split(source.kind, training=True))))
    items: dict[str, ItemRecord] = {}
    for part in loaded:
        for record in part.items:
            if record.item_id in items and items[record.item_id] is not record:
                raise ValueError(f"the item id {record.item_id!r} appears in two sources; give each source "
                                 "distinct ids")
            items[record.item_id] = record
    captioned = [part.captioned for part in loaded]
    pairs = [r for part in captioned for r in part]
    weights = mixture_weights(loaded, [len(c) for c in captioned])
    triplets = [t for part in loaded for t in part.triplets]
    description = [f"{part.spec.describe()} [{part.split}]: {len(part.items)} items, {len(c)} captioned "
                   f"({part.spec.style}), {len(part.triplets)} triplets" for part, c in zip(loaded, captioned,
                                                                                           strict=True)]
    gallery = [r.item_id for part in loaded if part.triplets for r in part.items]
    return TrainingData(pairs, weights, triplets, items, description, gallery)


def _stage_terms(stage: StageSpec) -> tuple[str, ...]:
    if stage.terms:
        return tuple(stage.terms)
    return phase_of(stage.phase, stage.stage).terms


def check_data_for_stages(data: TrainingData, stages: list[StageSpec]) -> None:
    """Fail before any image is encoded when a stage has nothing to train on, naming what is missing."""
    for stage in stages:
        if stage.phase == 1 and set(_stage_terms(stage)) - {"vae"} and not data.pairs:
            raise ValueError(f"stage {stage.name!r} (phase 1) trains on image-caption pairs, and no item of "
                             f"{'; '.join(data.description)} has a caption (Fashion-IQ's come from its "
                             "Fashion-IQ-cap file, captions/imgcap.CATEGORY.SPLIT.json)")
        if stage.phase == 2 and not data.triplets:
            raise ValueError(f"stage {stage.name!r} (phase 2) needs CIR triplets, and no data source has any: "
                             "add one that does (fashioniq:PATH, or an embedded catalogue)")


def run_recipe(recipe: TrainRecipe, progress: bool = True, deadline: float | None = None) -> Path:
    """Carry out ``recipe``; return the folder of the final model (or, when a stage's
    ``loop.stop_after`` stops it before its last step, that stage's checkpoints folder).

    ``deadline`` (a ``time.time()`` value, a wall-time budget): the stage running when it passes
    stops at a checkpoint, the model as it is then is saved to ``STAGE/out-of-time`` and that
    folder is returned; the later stages do not run. Running the recipe again resumes that stage."""
    from unifashion.models import UniFashion

    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2, sort_keys=True))
    torch.manual_seed(recipe.seed)
    data = training_data(recipe.data)
    (out / "data.json").write_text(json.dumps({"sources": data.description, "pairs": len(data.pairs),
                                               "triplets": len(data.triplets)}, indent=2))

    # Start from the last finished stage, if any.
    model_source: str = recipe.model
    overrides = recipe.model_overrides or None
    first_todo = 0
    for i, stage in enumerate(recipe.stages):
        if (out / stage.name / "final" / "config.json").is_file():
            model_source, overrides, first_todo = str(out / stage.name / "final"), None, i + 1
    check_data_for_stages(data, recipe.stages[first_todo:])
    if first_todo == 0:
        overrides = with_caption_vocabulary(model_source, overrides, data.pairs)
    model = UniFashion.from_pretrained(model_source, overrides)
    if first_todo == len(recipe.stages):
        return out / recipe.stages[-1].name / "final"

    first = recipe.stages[first_todo].loop
    if first.device == "cuda" or (first.device == "auto" and torch.cuda.is_available()):
        model.to("cuda")  # the feature cache is built on the device the stages train on
    bank = ImageBank(list(data.items.values()), model, progress=progress,
                     cache_dir=recipe.data.feature_cache or out / "feature-cache", workers=recipe.data.cache_workers)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    captions_file = out / "generated_captions.json"
    for stage in recipe.stages[first_todo:]:
        started = time.perf_counter()
        model.set_phase(stage.phase, stage.stage, stage.learns)
        terms = _stage_terms(stage)
        weights = None
        if stage.phase == 1:
            dataset = PairDataset(data.pairs, bank, seed=stage.loop.seed,
                                  with_generation="q2i" in terms or "vae" in terms)
            weights = data.pair_weights
        else:
            generated = None
            if recipe.caption_fusion and "cir" in terms and model.caption_lm is not None:
                if captions_file.is_file():
                    generated = json.loads(captions_file.read_text())
                else:
                    targets = sorted({t.target_id for t in data.triplets})
                    generated = caption_bank(model, bank, progress=progress, ids=targets)
                    captions_file.write_text(json.dumps(generated, indent=1, sort_keys=True))
                model.set_phase(stage.phase, stage.stage, stage.learns)
            dataset = TripletTrainDataset(data.triplets, data.items, bank, recipe.data.target_caption_style,
                                          generated, with_generation="q2i" in terms,
                                          need_target_captions="itg" in terms or ("cir" in terms and generated is None))
        loop = stage.loop
        loop.output_dir = str(out / stage.name)
        if latest_checkpoint(loop.output_dir) is not None:
            loop.resume = "latest"
        objective = PhaseObjective(model, stage.phase, stage.terms)
        if stage.phase == 2 and recipe.static_negatives_every:
            negatives = unifashion_gallery_bank(model, bank, data.gallery_ids, recipe.static_negatives_every)
            resumed = latest_checkpoint(loop.output_dir)
            negatives.step = json.loads((resumed / "state.json").read_text())["step"] if resumed else 0
            objective = StaticNegativesObjective(model, stage.terms, negatives)
        result = train(objective, dataset, dataset.collate, loop, description=stage.name,
                       run_config={"stage": configuration.to_dict(stage), "recipe": recipe.to_dict()},
                       sample_weights=weights, deadline=deadline)
        if result.out_of_time:
            if stage.phase == 1 and stage.stage == "autoencoder":
                calibrate_latent_scale(model, bank)
            model.eval()
            partial = out / stage.name / "out-of-time"
            model.save_pretrained(partial)
            timings[stage.name] = _stage_timing(timings.get(stage.name), time.perf_counter() - started, result)
            timings_file.write_text(json.dumps(timings, indent=2))
            return partial
        if loop.stop_after is not None and loop.stop_after < loop.steps:
            # Stopped on purpose before its end (as an interruption would): not final; the same
            # command with stop_after removed resumes it from the checkpoint.
            return Path(loop.output_dir) / "checkpoints"
        if stage.phase == 1 and stage.stage == "autoencoder":
            calibrate_latent_scale(model, bank)
        model.eval()
        model.save_pretrained(out / stage.name / "final")
        timings[stage.name] = _stage_timing(timings.get(stage.name), time.perf_counter() - started, result)
        timings_file.write_text(json.dumps(timings, indent=2))
    return out / recipe.stages[-1].name / "final"


def _stage_timing(previous: dict | None, seconds: float, result) -> dict:
    """A stage's entry of ``timings.json``: wall time and steps, added to those of the runs before
    it that ran out of time (a budgeted stage resumed), so the entry counts the whole stage."""
    earlier = previous if previous and previous.get("out_of_time") else {}
    steps = earlier.get("steps", 0) + result.steps_done
    total = earlier.get("seconds", 0.0) + seconds
    train_seconds = earlier.get("train_seconds", 0.0) + result.seconds
    entry = {"seconds": round(total, 1), "steps": steps, "train_seconds": round(train_seconds, 1),
             "seconds_per_step": round(train_seconds / max(1, steps), 4), "last_losses": result.last_losses}
    if result.out_of_time:
        entry["out_of_time"] = True
    return entry
