"""The two-stage composed-retrieval recipe on the dual-encoder backbone (CLIP4CIR's reading).

From "Exploring Multi-Modal Large Language Models and Two-Stage Fine-Tuning for Fashion Image
Retrieval" (2026; only its summary was at hand). Where it is silent, CLIP4CIR (Baldrati et al.)
is the standard reading, and this module follows it:

**Stage 1, ``encoders``** — the towers learn contrastively on triplets. The query is the
normalised sum of the reference image's and the text's embeddings (CLIP4CIR's stage 1), the
positive is the target image's embedding.

- trains: the image tower's head (``image_pool_query``, ``image_pool``, ``image_proj``), the top
  ``text_layers_trained`` layers of the text transformer (all-MiniLM-L6-v2 in the tiny preset:
  2 of 6 by default; ``None`` trains all of it, embeddings included), ``text_proj``, and the
  learnable temperature;
- frozen: the vision backbone (EfficientNet-Lite0, or a CLIP ViT from a local directory: it is
  frozen in the dual encoder, as in UniFashion, and its features are computed once per run), the
  text transformer's embeddings and lower layers (a CPU concession: backward through them
  doubled the cost of a step), and the combiner (not used).

**Stage 2, ``combiner``** — the towers are frozen and only the combiner learns: query =
``Combiner(reference image embedding, text embedding)``, the same contrastive loss.

- trains: ``combiner`` only;
- frozen: everything else, temperature included. Every embedding the combiner reads is fixed, so
  it is computed once and stage 2 runs on cached vectors (seconds).

**Sentence-level prompts** (``sentence_prompts``): the text input is the pretrained captioner's
caption of the reference (UniFashion ``tiny-default``, detailed style, standing in for the
paper's pretrained model) followed by the relative caption: ``"<caption>. <relative caption>"``.
The same prompt is built at evaluation time from the captioner's caption of the query image.

**Static negatives** (``static_negatives``): every training image's embedding joins each query's
softmax as a negative (:mod:`unifashion.objectives.negatives`). In stage 2 the image side is frozen,
so the bank is computed once; in stage 1 the image head still learns, so the bank is recomputed
every ``refresh_every`` steps.

Both stages start from a trained dual encoder (``dual-encoder-default``: the towers contrastively
trained on image-caption pairs, the stand-in for pretrained CLIP); the combiner is re-initialised
from the run's seed, so a run never inherits triplet training it was not given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unifashion import configuration
from unifashion.configuration import ConfigError
from unifashion.data.records import TripletRecord, sentence_prompt
from unifashion.models.dual_encoder import Combiner, DualEncoder
from unifashion.objectives.negatives import StaticNegativeBank, bank_positive_mask, contrastive_loss_with_bank
from unifashion.training.data import ImageBank, check_triplets_in_bank
from unifashion.training.trainer import LoopConfig, OptimConfig, latest_checkpoint, train

METHOD_FILE = "two_stage_cir.json"
STAGES = ("encoders", "combiner")


@dataclass
class TwoStageCIRConfig:
    """One run of the recipe; the ablations switch one field each."""

    stages: tuple[str, ...] = STAGES  # ("combiner",): no stage 1; ("encoders",): no stage 2 (sum combiner)
    sentence_prompts: bool = True
    static_negatives: bool = True
    refresh_every: int = 25  # stage-1 bank refresh (steps)
    text_layers_trained: int | None = 2  # top text-transformer layers that stage 1 trains; None: all
    stage1_steps: int = 60
    stage2_steps: int = 400
    batch_size: int = 32
    stage1_lr: float = 5e-5
    stage2_lr: float = 1e-3
    max_text_length: int = 96  # reference caption + relative caption
    seed: int = 0

    def __post_init__(self):
        self.stages = tuple(self.stages)
        if not self.stages or any(s not in STAGES for s in self.stages) or len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"stages must be a non-empty subset of {STAGES} in order, got {self.stages}")
        if list(self.stages) != [s for s in STAGES if s in self.stages]:
            raise ConfigError(f"stages run in the order {STAGES}, got {self.stages}")

    @property
    def combiner(self) -> str:
        """The combiner the trained model composes with: ``learned`` after stage 2, else ``sum``."""
        return "learned" if "combiner" in self.stages else "sum"

    @classmethod
    def from_dict(cls, data: dict, where: str = "two_stage_cir") -> TwoStageCIRConfig:
        return configuration.from_dict(cls, data, where)


class CIRTripletDataset(torch.utils.data.Dataset):
    """Triplets over cached vision features, with texts already prompted."""

    def __init__(self, triplets: Sequence[TripletRecord], bank: ImageBank,
                 reference_captions: dict[str, str] | None = None):
        self.triplets = check_triplets_in_bank(triplets, bank)
        for t in self.triplets:
            if reference_captions is not None and t.reference_id not in reference_captions:
                raise KeyError(f"no caption of the reference {t.reference_id!r} for its sentence-level prompt")
        self.bank = bank
        self.texts = [sentence_prompt(reference_captions[t.reference_id] if reference_captions else None,
                                      t.modification_text) for t in self.triplets]

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, rows: list[int]) -> dict:
        refs = [self.triplets[i].reference_id for i in rows]
        tgts = [self.triplets[i].target_id for i in rows]
        return {"ids": torch.tensor([self.bank.index[i] for i in tgts]),
                "reference_vision_features": self.bank.features(refs),
                "target_vision_features": self.bank.features(tgts),
                "texts": [self.texts[i] for i in rows]}


class EncoderStageObjective(nn.Module):
    """Stage 1: sum-combined query vs. target image, in-batch negatives (+ the bank)."""

    def __init__(self, model: DualEncoder, negatives: StaticNegativeBank | None = None):
        super().__init__()
        self.model = model
        self.negatives = negatives

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        model = self.model
        reference = model.embed_vision_features(batch["reference_vision_features"])
        target = model.embed_vision_features(batch["target_vision_features"])
        query = model.compose(reference, model.encode_text(batch["texts"]), combiner="sum")
        return _contrastive_terms(query, target, model.temperature, batch["ids"],
                                  self.negatives if self.training else None)


class CachedCombinerDataset(torch.utils.data.Dataset):
    """Stage 2's inputs, all fixed: reference, text and target embeddings per triplet."""

    def __init__(self, reference: torch.Tensor, text: torch.Tensor, target: torch.Tensor, target_ids: torch.Tensor):
        self.reference, self.text, self.target, self.target_ids = reference, text, target, target_ids

    def __len__(self) -> int:
        return len(self.target_ids)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, rows: list[int]) -> dict:
        return {"reference": self.reference[rows], "text": self.text[rows], "target": self.target[rows],
                "ids": self.target_ids[rows]}


class CombinerStageObjective(nn.Module):
    """Stage 2: ``Combiner(reference, text)`` vs. target image, in-batch negatives (+ the bank)."""

    def __init__(self, model: DualEncoder, negatives: StaticNegativeBank | None = None):
        super().__init__()
        self.model = model
        self.negatives = negatives

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        query = self.model.combiner(batch["reference"], batch["text"])
        return _contrastive_terms(query, batch["target"], self.model.temperature.detach(), batch["ids"],
                                  self.negatives if self.training else None)


def _contrastive_terms(query, target, temperature, target_ids, negatives: StaticNegativeBank | None) -> dict:
    logits = query @ target.t() / temperature
    if negatives is None:
        loss = contrastive_loss_with_bank(logits)
        return {"loss": loss, "in_batch": loss.detach()}
    bank = negatives.current()
    bank_logits = query @ bank.t() / temperature
    loss = contrastive_loss_with_bank(logits, bank_logits, bank_positive_mask(target_ids, negatives.ids))
    return {"loss": loss, "in_batch": contrastive_loss_with_bank(logits).detach()}


def gallery_bank(model: DualEncoder, bank: ImageBank, refresh_every: int | None) -> StaticNegativeBank:
    """Embeddings of every image in ``bank`` (the training gallery), ids = bank indices."""
    def embed() -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = [model.embed_vision_features(bank.vision_features[s:s + 256].float().to(model.device))
               for s in range(0, len(bank.ids), 256)]
        model.train(was_training)
        return torch.cat(out)

    return StaticNegativeBank(embed, torch.arange(len(bank.ids)), refresh_every)


def freeze_lower_text_layers(model: DualEncoder, trained: int | None) -> None:
    """Freeze the text transformer's embeddings and all but its top ``trained`` layers (None: keep
    all trainable)."""
    if trained is None:
        return
    layers = model.text.encoder.layer
    if not 0 <= trained <= len(layers):
        raise ValueError(f"text_layers_trained must be in 0..{len(layers)} or None, got {trained}")
    model.text.embeddings.requires_grad_(False)
    for layer in layers[:len(layers) - trained]:
        layer.requires_grad_(False)


def _resumed_step(output_dir: Path) -> int:
    checkpoint = latest_checkpoint(output_dir)
    return json.loads((checkpoint / "state.json").read_text())["step"] if checkpoint else 0


@torch.no_grad()
def _embed_triplets(model: DualEncoder, dataset: CIRTripletDataset, batch_size: int = 128):
    model.eval()
    refs, texts, tgts = [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset.collate(list(range(start, min(start + batch_size, len(dataset)))))
        refs.append(model.embed_vision_features(batch["reference_vision_features"]))
        tgts.append(model.embed_vision_features(batch["target_vision_features"]))
        texts.append(model.encode_text(batch["texts"]))
    ids = torch.tensor([dataset.bank.index[t.target_id] for t in dataset.triplets])
    return torch.cat(refs), torch.cat(texts), torch.cat(tgts), ids


def train_two_stage_cir(model: DualEncoder, triplets: Sequence[TripletRecord], bank: ImageBank,
                        output_dir: str | os.PathLike, config: TwoStageCIRConfig | None = None,
                        reference_captions: dict[str, str] | None = None, progress: bool = True) -> Path:
    """Train ``model`` (a dual encoder, modified in place) by the recipe and save it to
    ``output_dir/final`` with the recipe in ``two_stage_cir.json``. ``bank`` holds the cached
    vision features of every training image (the gallery of the static negatives).
    ``reference_captions`` are needed when ``config.sentence_prompts``. Stages resume from their
    last checkpoint; a finished run is returned as it is."""
    config = config or TwoStageCIRConfig()
    out = Path(output_dir)
    final = out / "final"
    if (final / METHOD_FILE).is_file():
        return final
    if config.sentence_prompts and reference_captions is None:
        raise ValueError("sentence-level prompts need the captions of the reference images")
    torch.manual_seed(config.seed)
    model.combiner = Combiner(model.config.embed_dim, model.config.combiner_hidden).to(model.device)
    model.processor.max_text_length = config.max_text_length
    dataset = CIRTripletDataset(triplets, bank, reference_captions if config.sentence_prompts else None)
    timings = {}

    def loop(stage: str, steps: int, lr: float, warmup: int) -> LoopConfig:
        # Checkpoints on refresh steps, so that a resumed stage 1 refreshes its bank when an unbroken run would.
        every = config.refresh_every * max(1, 50 // config.refresh_every)
        return LoopConfig(steps=steps, batch_size=config.batch_size, seed=config.seed,
                          output_dir=str(out / stage), checkpoint_every=every,
                          resume="latest" if latest_checkpoint(out / stage) else None,
                          optim=OptimConfig(lr=lr, warmup_steps=warmup))

    if "encoders" in config.stages:
        model.set_stage("encoders")
        freeze_lower_text_layers(model, config.text_layers_trained)
        negatives = gallery_bank(model, bank, config.refresh_every) if config.static_negatives else None
        if negatives is not None:
            negatives.step = _resumed_step(out / "encoders")
        result = train(EncoderStageObjective(model, negatives), dataset, dataset.collate,
                       loop("encoders", config.stage1_steps, config.stage1_lr, max(1, config.stage1_steps // 10)),
                       description="two-stage CIR, stage 1: encoders")
        timings["encoders"] = round(result.seconds, 1)
    if "combiner" in config.stages:
        model.set_stage("combiner")
        cached = CachedCombinerDataset(*_embed_triplets(model, dataset))
        negatives = gallery_bank(model, bank, None) if config.static_negatives else None  # frozen: computed once
        result = train(CombinerStageObjective(model, negatives), cached, cached.collate,
                       loop("combiner", config.stage2_steps, config.stage2_lr, max(1, config.stage2_steps // 20)),
                       description="two-stage CIR, stage 2: combiner")
        timings["combiner"] = round(result.seconds, 1)
    model.eval()
    model.save_pretrained(final)
    (final / METHOD_FILE).write_text(json.dumps({"config": configuration.to_dict(config), "train_seconds": timings,
                                                 "triplets": len(dataset)}, indent=2, sort_keys=True))
    return final


def load_two_stage_cir(directory: str | os.PathLike) -> tuple[DualEncoder, TwoStageCIRConfig]:
    """A model saved by :func:`train_two_stage_cir` and the recipe it was trained with."""
    directory = Path(directory)
    method_file = directory / METHOD_FILE
    if not method_file.is_file():
        raise FileNotFoundError(f"not a two-stage CIR model: {method_file} is missing")
    config = TwoStageCIRConfig.from_dict(json.loads(method_file.read_text())["config"])
    model = DualEncoder.from_pretrained(directory)
    model.processor.max_text_length = config.max_text_length
    return model, config
