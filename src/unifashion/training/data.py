"""Training data for the two phases, prepared once so that steps spend their time on learning.

The vision encoder is frozen in both phases, so its output for an image never changes: a run
computes the features of every image once (:class:`ImageBank`) and feeds them to the Q-Former.
Images at the diffusion resolution are kept as uint8 for ``L_q2I``.

Randomness inside a batch (which caption style an item is described in) comes from the global
torch RNG in the collate function, which runs in the main process, so resumed runs replay it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from unifashion.data.records import CAPTION_STYLES, ItemRecord, TripletRecord


class ImageBank:
    """Every image of a run, preprocessed once: frozen vision features and diffusion-size pixels."""

    def __init__(self, records: Sequence[ItemRecord], model, batch_size: int = 64, progress: bool = True,
                 with_generation_images: bool = True):
        self.ids = [r.item_id for r in records]
        self.index = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise ValueError("duplicate item ids in the image bank")
        features, gen = [], []
        diffusion = getattr(model, "diffusion", None)
        gen_size = diffusion.image_size if (with_generation_images and diffusion is not None) else None
        model_device = model.device
        for start in tqdm(range(0, len(records), batch_size), desc="encoding images (frozen vision encoder)",
                          disable=not progress, unit="batch"):
            images = [r.load_image() for r in records[start:start + batch_size]]
            with torch.no_grad():
                pixel_values = model.processor.preprocess_images(images).to(model_device)
                features.append(model.vision(pixel_values).features.to(torch.float16).cpu())
            if gen_size:
                gen.append((model.processor.to_tensor(images, gen_size) * 255).round().to(torch.uint8))
        self.vision_features = torch.cat(features)
        self.generation_images = torch.cat(gen) if gen else None

    def features(self, ids: Sequence[str]) -> torch.Tensor:
        return self.vision_features[[self.index[i] for i in ids]].float()

    def generation(self, ids: Sequence[str]) -> torch.Tensor | None:
        if self.generation_images is None:
            return None
        return self.generation_images[[self.index[i] for i in ids]].float() / 255.0


def _pick_styles(n: int, styles: Sequence[str]) -> list[str]:
    picks = torch.randint(0, len(styles), (n,)).tolist()
    return [styles[p] for p in picks]


class PairDataset(torch.utils.data.Dataset):
    """Phase 1: image-caption pairs. Each step describes an item in a randomly chosen style."""

    def __init__(self, records: Sequence[ItemRecord], bank: ImageBank, styles: Sequence[str] = CAPTION_STYLES):
        self.records = [r for r in records if r.captions]
        if not self.records:
            raise ValueError("no captioned items to train on")
        self.bank = bank
        self.styles = tuple(styles)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ItemRecord:
        return self.records[index]

    def collate(self, rows: list[ItemRecord]) -> dict:
        styles = _pick_styles(len(rows), self.styles)
        ids = [r.item_id for r in rows]
        batch = {
            "ids": torch.tensor([self.bank.index[i] for i in ids]),
            "vision_features": self.bank.features(ids),
            "captions": [r.caption(s) for r, s in zip(rows, styles, strict=True)],
            "styles": styles,
        }
        gen = self.bank.generation(ids)
        if gen is not None:
            batch["generation_images"] = gen
        return batch


def check_triplets_in_bank(triplets: Sequence[TripletRecord], bank: ImageBank) -> list[TripletRecord]:
    """The triplets as a list; an error when there are none or one names an image the bank lacks."""
    triplets = list(triplets)
    if not triplets:
        raise ValueError("no triplets to train on")
    for t in triplets:
        for item_id in (t.reference_id, t.target_id):
            if item_id not in bank.index:
                raise KeyError(f"triplet item {item_id!r} is not in the image bank")
    return triplets


class TripletTrainDataset(torch.utils.data.Dataset):
    """Phase 2: CIR triplets. ITG writes the target's caption (``target_style``); Z_C comes from
    ``generated_captions`` (the model's own captions of the targets) when given."""

    def __init__(self, triplets: Sequence[TripletRecord], items: dict[str, ItemRecord], bank: ImageBank,
                 target_style: str = "detailed", generated_captions: dict[str, str] | None = None):
        self.triplets = check_triplets_in_bank(triplets, bank)
        self.items = items
        self.bank = bank
        self.target_style = target_style
        self.generated_captions = generated_captions

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> TripletRecord:
        return self.triplets[index]

    def collate(self, rows: list[TripletRecord]) -> dict:
        refs = [t.reference_id for t in rows]
        tgts = [t.target_id for t in rows]
        batch = {
            "ids": torch.tensor([self.bank.index[i] for i in tgts]),
            "reference_vision_features": self.bank.features(refs),
            "target_vision_features": self.bank.features(tgts),
            "texts": [t.modification_text for t in rows],
            "target_captions": [self.items[i].caption(self.target_style) for i in tgts],
            "styles": [self.target_style] * len(rows),
        }
        if self.generated_captions is not None:
            batch["target_generated_captions"] = [self.generated_captions[i] for i in tgts]
        gen = self.bank.generation(tgts)
        if gen is not None:
            batch["target_generation_images"] = gen
        return batch
