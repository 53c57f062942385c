"""Training data for the two phases, prepared so that memory does not grow with the dataset.

The vision encoder is frozen in both phases, so its output for an image never changes: a run
computes the features of every image once, into a sharded cache on disk
(:class:`ImageBank` over :class:`~unifashion.data.feature_cache.FeatureCache`), and batches read
the rows they need. Pixels at the diffusion resolution (for ``L_q2I`` and the VAE) are read from
the records when a batch needs them, in the data loader's workers when there are any.

Randomness inside a batch (which caption style an item is described in) comes from a generator
seeded by the dataset's seed and the batch's rows, so a batch is the same whichever process
builds it and whether the run was resumed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from unifashion.data.feature_cache import FeatureCache, build_feature_cache, encoder_key, records_key
from unifashion.data.records import CAPTION_STYLES, ItemRecord, TripletRecord


class ImageBank:
    """Every image of a run: frozen vision features in an on-disk cache, pixels read on demand.

    ``cache_dir``: the folder under which the cache lives (one sub-folder per set of images and
    encoder, so a second run on the same data reuses it); None: a temporary folder, removed with
    the bank. ``workers``: image-reading processes while the cache is built.
    """

    def __init__(self, records: Sequence[ItemRecord], model, batch_size: int = 64, progress: bool = True,
                 with_generation_images: bool = True, cache_dir: str | Path | None = None, workers: int = 0):
        self.records = list(records)
        self.ids = [r.item_id for r in self.records]
        self.index = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise ValueError("duplicate item ids in the image bank")
        key = records_key(self.records, encoder_key(model))
        if cache_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="unifashion-features-")
            folder = Path(self._tmp.name)
        else:
            folder = Path(cache_dir) / key
        device = model.device

        def encode(images):
            return model.vision(model.processor.preprocess_images(images).to(device)).features

        self.cache: FeatureCache = build_feature_cache(self.records, encode, folder, key, batch_size=batch_size,
                                                       workers=workers, progress=progress)
        diffusion = getattr(model, "diffusion", None)
        self.generation_size = diffusion.image_size if (with_generation_images and diffusion is not None) else None
        self.processor = model.processor

    @property
    def vision_features(self) -> FeatureCache:
        """The (N, tokens, channels) features, indexable like a tensor (rows are read from disk)."""
        return self.cache

    def features(self, ids: Sequence[str]) -> torch.Tensor:
        return self.cache.rows([self.index[i] for i in ids])

    def generation_of(self, record: ItemRecord) -> torch.Tensor:
        """One record's image at the diffusion size, (3, S, S) in [0, 1], quantised to 8 bits as
        an image file would be."""
        pixels = self.processor.to_tensor([record.load_image()], self.generation_size)[0]
        return (pixels * 255).round() / 255.0

    def generation(self, ids: Sequence[str]) -> torch.Tensor | None:
        if self.generation_size is None:
            return None
        return torch.stack([self.generation_of(self.records[self.index[i]]) for i in ids])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_tmp", None)  # the main process owns (and removes) a temporary cache
        return state


def trainable_styles(record: ItemRecord, styles: Sequence[str] = CAPTION_STYLES) -> list[str]:
    """The styles of ``styles`` that ``record`` has a caption in (its instruction must match it)."""
    return [s for s in styles if record.captions.get(s)]


def styled_caption(record: ItemRecord, preferred: str) -> tuple[str, str]:
    """``(style, caption)``: the caption in ``preferred`` when the record has one, else its first
    caption in a known style, so the instruction always names the style the text is written in."""
    if record.captions.get(preferred):
        return preferred, record.captions[preferred]
    for style in CAPTION_STYLES:
        if record.captions.get(style):
            return style, record.captions[style]
    raise KeyError(f"item {record.item_id!r} has no caption in a known style ({list(CAPTION_STYLES)}); "
                   f"it has {sorted(record.captions)}")


def _batch_rng(seed: int, rows: Sequence[int]) -> np.random.Generator:
    return np.random.default_rng([seed, len(rows), *(int(r) for r in rows)])


class PairDataset(torch.utils.data.Dataset):
    """Phase 1: image-caption pairs. Each step describes an item in one of the styles it has a
    caption in (FashionGen: professional; Fashion200K: short; Fashion-IQ-cap: detailed; the
    embedded catalogue: all three), chosen at random; the instruction follows the style.

    ``with_generation``: also read each item's pixels at the diffusion size (stages with L_q2I
    or the VAE); off, a batch carries only features and captions.
    """

    def __init__(self, records: Sequence[ItemRecord], bank: ImageBank, styles: Sequence[str] = CAPTION_STYLES,
                 seed: int = 0, with_generation: bool = True):
        self.styles = tuple(styles)
        self.records = [r for r in records if trainable_styles(r, self.styles)]
        if not self.records:
            raise ValueError(f"no items with a caption in the styles {list(self.styles)} to train on")
        self.bank = bank
        self.seed = seed
        self.with_generation = with_generation and bank.generation_size is not None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        row = self.bank.index[record.item_id]
        out = {"row": row, "record": record, "features": self.bank.cache.rows([row])[0]}
        if self.with_generation:
            out["generation"] = self.bank.generation_of(record)
        return out

    def collate(self, rows: list[dict]) -> dict:
        bank_rows = [r["row"] for r in rows]
        rng = _batch_rng(self.seed, bank_rows)
        styles, captions = [], []
        for r in rows:
            options = trainable_styles(r["record"], self.styles)
            style = options[int(rng.integers(len(options)))]
            styles.append(style)
            captions.append(r["record"].captions[style])
        batch = {
            "ids": torch.tensor(bank_rows),
            "vision_features": torch.stack([r["features"] for r in rows]),
            "captions": captions,
            "styles": styles,
        }
        if self.with_generation:
            batch["generation_images"] = torch.stack([r["generation"] for r in rows])
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
    """Phase 2: CIR triplets. ITG writes the target's caption (``target_style`` when the target
    has one, else its caption in another style, with that style's instruction); Z_C comes from
    ``generated_captions`` (the model's own captions of the targets) when given.

    ``need_target_captions``: every target must have a caption (ITG, or Z_C without generated
    captions); an error names the first that has none. Off, a target without one gets "".
    """

    def __init__(self, triplets: Sequence[TripletRecord], items: dict[str, ItemRecord], bank: ImageBank,
                 target_style: str = "detailed", generated_captions: dict[str, str] | None = None,
                 with_generation: bool = True, need_target_captions: bool = True):
        self.triplets = check_triplets_in_bank(triplets, bank)
        self.items = items
        self.bank = bank
        self.target_style = target_style
        self.generated_captions = generated_captions
        self.with_generation = with_generation and bank.generation_size is not None
        self.need_target_captions = need_target_captions
        if need_target_captions:
            for t in self.triplets:
                if not trainable_styles(items[t.target_id]):
                    raise ValueError(
                        f"the phase-2 target {t.target_id!r} has no caption, which ITG (and Z_C without the "
                        "model's own captions) needs; give the dataset captions (Fashion-IQ: the Fashion-IQ-cap "
                        "file) or leave 'itg' out of the stage's terms")
        if generated_captions is not None:
            missing = [t.target_id for t in self.triplets if t.target_id not in generated_captions]
            if missing:
                raise KeyError(f"no generated caption of the target {missing[0]!r} ({len(missing)} missing)")

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict:
        t = self.triplets[index]
        out = {"triplet": t, "row": self.bank.index[t.target_id],
               "reference": self.bank.cache.rows([self.bank.index[t.reference_id]])[0],
               "target": self.bank.cache.rows([self.bank.index[t.target_id]])[0]}
        if self.with_generation:
            out["generation"] = self.bank.generation_of(self.items[t.target_id])
        return out

    def _target_caption(self, target_id: str) -> tuple[str, str]:
        record = self.items[target_id]
        if not self.need_target_captions and not trainable_styles(record):
            return self.target_style, ""
        return styled_caption(record, self.target_style)

    def collate(self, rows: list[dict]) -> dict:
        tgts = [r["triplet"].target_id for r in rows]
        styled = [self._target_caption(i) for i in tgts]
        batch = {
            "ids": torch.tensor([r["row"] for r in rows]),
            "reference_vision_features": torch.stack([r["reference"] for r in rows]),
            "target_vision_features": torch.stack([r["target"] for r in rows]),
            "texts": [r["triplet"].modification_text for r in rows],
            "target_captions": [caption for _, caption in styled],
            "styles": [style for style, _ in styled],
        }
        if self.generated_captions is not None:
            batch["target_generated_captions"] = [self.generated_captions[i] for i in tgts]
        if self.with_generation:
            batch["target_generation_images"] = torch.stack([r["generation"] for r in rows])
        return batch
