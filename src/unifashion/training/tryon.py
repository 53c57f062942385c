"""Training the generation path for fashion design (MGD) and virtual try-on (VITON-HD).

Both tasks repaint the agnostic region of a person image; the UNet reads the person around the
region, the mask and (design) the garment sketch as extra input channels (see
:mod:`unifashion.models.diffusion`), and the Q-Former queries, through TSA_diff, as its
cross-attention condition:

- **design**: ``[masked person latents, mask, sketch]`` + the queries of the text (the same
  text-only queries that condition text-to-image generation,
  :meth:`UniFashion.text_conditioned_queries`);
- **try-on**: ``[masked person latents, mask, 0]`` + the queries of the in-shop garment image
  (the Q-Former's image queries, as for image-conditioned generation). The sketch channel is
  left empty by default, as in VITON-HD, where no sketch is given; ``tryon_sketch=True`` feeds
  the garment sketch too (MGD's try-on-with-sketch variant).

Each batch is half design, half try-on (the same people seen either way), and the loss is the
mean of the two tasks' L_q2I (each logged). What learns:

- default (``train_unet=True``): the UNet (with the learned null condition) and TSA_diff; the
  Q-Former stays as the default model trained it. Our tiny UNet was trained on flat garments
  only, with the extra channels at zero, so it has never seen a person, a mask or a sketch:
  on the tiny preset it must learn them;
- ``train_unet=False``: the paper's choice for try-on, the diffusion model frozen and the
  Q-Former + TSA_diff tuned. With Stable Diffusion's UNet (which knows people) that is enough;
  our tiny UNet learns nothing about the new channels then, so expect little.

With the Q-Former frozen, its queries never change, so they are computed once per sample before
training (:class:`TryOnTrainData`), as :class:`~unifashion.training.data.ImageBank` does for
the frozen vision features. Training goes through the shared loop (:func:`train`): progress
bar, safetensors checkpoints and exact resume.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from unifashion import configuration
from unifashion.data.records import TryOnRecord, load_image
from unifashion.objectives import phases
from unifashion.training.trainer import LoopConfig, OptimConfig, TrainResult, latest_checkpoint, train

TASKS = ("design", "tryon")


@dataclass
class TryOnTrainConfig:
    """What :func:`train_tryon` trains and how long."""

    train_unet: bool = True  # False: the paper's try-on choice (diffusion frozen, Q-Former + TSA_diff tuned)
    tryon_sketch: bool = False  # give try-on the garment sketch channel too
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(
        steps=800, batch_size=32, checkpoint_every=100, log_every=10,
        optim=OptimConfig(lr=2e-4, warmup_steps=50, weight_decay=0.01)))

    @classmethod
    def from_dict(cls, data: dict, where: str = "tryon.train") -> TryOnTrainConfig:
        return configuration.from_dict(cls, data, where)


def tryon_stage(train_unet: bool) -> str:
    """The :meth:`UniFashion.set_phase` stage (phase None) that trains design + try-on."""
    return phases.TRYON_STAGE if train_unet else phases.TRYON_QFORMER_STAGE


def trainable_groups(train_unet: bool) -> list[str]:
    """Parameter groups of :meth:`UniFashion.parameter_group` that learn (the try-on phase's)."""
    return list(phases.phase_of(None, tryon_stage(train_unet)).trains)


def set_tryon_trainable(model, train_unet: bool) -> list[str]:
    """Check the model can learn design / try-on, then put it in the try-on stage
    (``model.set_phase(None, tryon_stage(train_unet))``); return the groups that learn."""
    if model.diffusion is None:
        raise ValueError("the model has no diffusion component to train for design / try-on")
    if model.diffusion.config.extra_channels == 0:
        raise ValueError("the model's UNet has no mask/sketch input channels (diffusion.extra_channels is 0); "
                         "design / try-on needs extra_channels = latent_channels + 2")
    if train_unet and model.diffusion.config.freeze_unet:
        raise ValueError("train_unet=True but the model's config freezes the UNet (diffusion.freeze_unet)")
    stage = tryon_stage(train_unet)
    model.set_phase(None, stage)
    return model.trainable_groups(None, stage)


def _stack_images(records: Sequence[TryOnRecord], attribute: str, mode: str, size: int, processor) -> torch.Tensor:
    """uint8 (N, C, size, size) of one image per record (a missing optional image gives zeros)."""
    out = []
    for r in records:
        source = getattr(r, attribute)
        if source is None:
            out.append(torch.zeros(1 if mode == "L" else 3, size, size))
        else:
            out.append(processor.to_tensor(load_image(source, mode), size, mode=mode, nearest=mode == "L")[0])
    return (torch.stack(out) * 255).round().to(torch.uint8)


class TryOnTrainData(torch.utils.data.Dataset):
    """Every try-on sample of a run, loaded once: person, mask and sketch at the diffusion size,
    the garment's frozen vision features, the text, and (Q-Former frozen) both tasks' queries."""

    def __init__(self, records: Sequence[TryOnRecord], model, precompute_queries: bool, batch_size: int = 64,
                 progress: bool = True):
        if not records:
            raise ValueError("no try-on samples to train on")
        missing_sketch = [r.sample_id for r in records if r.sketch is None]
        if missing_sketch:
            raise ValueError(f"{len(missing_sketch)} samples have no sketch (e.g. {missing_sketch[0]!r}); the "
                             "design task needs im_sketch/")
        self.records = list(records)
        self.texts = [r.text for r in records]
        size = model.diffusion.image_size
        processor = model.processor
        self.person = _stack_images(records, "person", "RGB", size, processor)
        self.mask = _stack_images(records, "agnostic_mask", "L", size, processor)
        self.sketch = _stack_images(records, "sketch", "L", size, processor)
        features, design, tryon = [], [], []
        model.eval()
        for start in tqdm(range(0, len(records), batch_size), desc="encoding garments and texts", unit="batch",
                          disable=not progress):
            chunk = records[start:start + batch_size]
            with torch.no_grad():
                pixels = processor.preprocess_images([load_image(r.garment) for r in chunk]).to(model.device)
                vision = model.vision(pixels).features
                features.append(vision.to(torch.float16).cpu())
                if precompute_queries:
                    design.append(model.text_conditioned_queries([r.text for r in chunk]).to(torch.float16).cpu())
                    tryon.append(model.get_image_features(vision_features=vision).query_output
                                 .to(torch.float16).cpu())
        self.garment_features = torch.cat(features)
        self.queries = {"design": torch.cat(design), "tryon": torch.cat(tryon)} if precompute_queries else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> int:
        return index

    def _part(self, rows: list[int], task: str) -> dict:
        part = {
            "person": self.person[rows].float() / 255.0,
            "mask": (self.mask[rows] >= 128).float(),
            "sketch": self.sketch[rows].float() / 255.0,
        }
        if self.queries is not None:
            part["queries"] = self.queries[task][rows].float()
        elif task == "design":
            part["texts"] = [self.texts[i] for i in rows]
        else:
            part["garment_features"] = self.garment_features[rows].float()
        return part

    def collate(self, rows: list[int]) -> dict:
        """The first half of a batch trains design, the second try-on (the sampler shuffles)."""
        half = max(1, len(rows) // 2)
        batch = {"design": self._part(rows[:half], "design")}
        if rows[half:]:
            batch["tryon"] = self._part(rows[half:], "tryon")
        return batch


class TryOnObjective(nn.Module):
    """``forward(batch)`` -> {"loss", "q2i_design", "q2i_tryon"}: L_q2I of each task and their mean."""

    def __init__(self, model, tryon_sketch: bool = False):
        super().__init__()
        self.model = model
        self.tryon_sketch = tryon_sketch

    def queries(self, task: str, part: dict) -> torch.Tensor:
        if "queries" in part:
            return part["queries"]
        if task == "design":
            return self.model.text_conditioned_queries(part["texts"])
        return self.model.get_image_features(vision_features=part["garment_features"]).query_output

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        diffusion = self.model.diffusion
        terms: dict[str, torch.Tensor] = {}
        for task in TASKS:
            part = batch.get(task)
            if part is None:
                continue
            sketch = part["sketch"] if task == "design" or self.tryon_sketch else None
            terms[f"q2i_{task}"] = diffusion.loss(part["person"], self.queries(task, part), mask=part["mask"],
                                                  sketch=sketch, masked_image=part["person"])
        terms["loss"] = torch.stack(list(terms.values())).mean()
        return terms


def train_tryon(model, records: Sequence[TryOnRecord], config: TryOnTrainConfig, output_dir: str | Path,
                progress: bool = True) -> TrainResult:
    """Train ``model`` in place for design and try-on on ``records`` (the ``paired`` setting of a
    VITON-layout train split). Resumes from ``output_dir``'s last checkpoint when there is one."""
    groups = set_tryon_trainable(model, config.train_unet)
    data = TryOnTrainData(records, model, precompute_queries="qformer" not in groups, progress=progress)
    loop = dataclasses.replace(config.loop)
    loop.output_dir = str(output_dir)
    if loop.resume is None and latest_checkpoint(output_dir) is not None:
        loop.resume = "latest"
    objective = TryOnObjective(model, tryon_sketch=config.tryon_sketch)
    return train(objective, data, data.collate, loop, description="design + try-on",
                 run_config={"tryon": configuration.to_dict(config), "groups": groups, "samples": len(records)})


def save_tryon_model(model, directory: str | Path, config: TryOnTrainConfig) -> Path:
    """Save the trained model and a ``tryon.json`` that says how it conditions each task."""
    directory = Path(directory)
    model.eval()
    model.save_pretrained(directory)
    (directory / "tryon.json").write_text(json.dumps(
        {"tryon_sketch": config.tryon_sketch, "train_unet": config.train_unet,
         "trained_groups": trainable_groups(config.train_unet)}, indent=2) + "\n")
    return directory


def tryon_uses_sketch(model_dir: str | Path | None) -> bool:
    """Whether a model saved by :func:`save_tryon_model` was trained to take a sketch for try-on."""
    if model_dir is None:
        return False
    path = Path(model_dir) / "tryon.json"
    return bool(json.loads(path.read_text()).get("tryon_sketch", False)) if path.is_file() else False
