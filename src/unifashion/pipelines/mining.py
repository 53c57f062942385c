"""The model-running side of triplet mining (:mod:`unifashion.data.mining` is the data side):
caption a collection with the model and keep its own image-caption scores
(:func:`caption_collection`, :class:`CaptionScorer`), then mine it with every filter
(:func:`mine_collection`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from unifashion.data.mining import MiningConfig, MiningResult, edit_names, mine_triplets, with_value
from unifashion.data.records import ItemRecord
from unifashion.data.synthetic.captions import detailed_caption


@dataclass
class CaptionScorer:
    """The captioner's own image-caption scores ``max_q <Z_q(image), t(caption)>`` for any (image,
    caption) pair of a collection, from its image embeddings Z (N, Q, D) and caption embeddings
    (N, D), kept in float16 (a 100k-image collection takes about 1.7 GB)."""

    ids: list[str]
    image_embeds: torch.Tensor
    caption_embeds: torch.Tensor
    encode_text: Callable[[list[str]], torch.Tensor] | None = None  # the captioner's text path, for verify_edits

    def __post_init__(self):
        self.index = {item_id: k for k, item_id in enumerate(self.ids)}

    def verify_edits(self, pairs: Sequence[tuple[str, dict, str, dict]], batch_size: int = 256) -> list[bool]:
        """For each (reference id, attributes, target id, attributes): True when every edit between
        them is visible to the model (see the ``unverified_edit`` filter in the module docstring)."""
        if self.encode_text is None:
            raise ValueError("verify_edits needs the captioner's text encoder (CaptionScorer.encode_text)")
        checks = []  # (image id, own canonical caption, counterfactual caption) per edit and side
        for ref_id, ref, tgt_id, tgt in pairs:
            for name in edit_names(ref, tgt):
                checks.append((tgt_id, detailed_caption(tgt), detailed_caption(with_value(tgt, name, ref))))
                checks.append((ref_id, detailed_caption(ref), detailed_caption(with_value(ref, name, tgt))))
        texts = sorted({t for _, own, other in checks for t in (own, other)})
        embeds = {}
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            embeds.update(zip(chunk, self.encode_text(chunk).float().cpu(), strict=True))
        passed = []
        for image_id, own, other in checks:
            z = self.image_embeds[self.index[image_id]].float()
            passed.append(bool((z @ embeds[own]).max() > (z @ embeds[other]).max()))
        out, k = [], 0
        for _, ref, _, tgt in pairs:
            n = 2 * len(edit_names(ref, tgt))
            out.append(all(passed[k:k + n]))
            k += n
        return out

    def __call__(self, image_id: str, caption_id: str) -> float:
        z = self.image_embeds[self.index[image_id]].float()
        t = self.caption_embeds[self.index[caption_id]].float()
        return float((z @ t).max())

    def agreement(self) -> dict[str, float]:
        """Each image against its own caption."""
        scores = (self.image_embeds.float() @ self.caption_embeds.float().unsqueeze(-1)).squeeze(-1).max(dim=1).values
        return dict(zip(self.ids, scores.tolist(), strict=True))

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        save_file({"image_embeds": self.image_embeds.contiguous(), "caption_embeds": self.caption_embeds.contiguous()},
                  str(path), metadata={"ids": "\n".join(self.ids)})

    @classmethod
    def load(cls, path: str | os.PathLike, encode_text: Callable | None = None) -> CaptionScorer:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            ids = handle.metadata()["ids"].split("\n")
            return cls(ids, handle.get_tensor("image_embeds"), handle.get_tensor("caption_embeds"), encode_text)


def caption_collection(model, records: Sequence[ItemRecord], batch_size: int = 64,
                       progress: bool = True) -> tuple[dict[str, str], CaptionScorer]:
    """The model's caption of every image (its fusion captions, :meth:`UniFashion.fusion_captions`,
    the same Z_C captions as training and the index), and a :class:`CaptionScorer` of the model's
    own image-caption scores (its ITC score) for the agreement filters."""
    from tqdm.auto import tqdm

    style = model.config.fusion_caption_style
    if style != "detailed":
        raise ValueError(f"mining parses detailed captions; this model's fusion_caption_style is {style!r}")
    model.eval()
    captions: dict[str, str] = {}
    image_embeds, caption_embeds = [], []
    for start in tqdm(range(0, len(records), batch_size), desc=f"captioning ({style})", disable=not progress,
                      unit="batch"):
        chunk = records[start:start + batch_size]
        with torch.no_grad():
            pixel_values = model.processor.preprocess_images([r.load_image() for r in chunk]).to(model.device)
            features = model.get_image_features(vision_features=model.vision(pixel_values).features)
            texts = model.fusion_captions(query_output=features.query_output)
            image_embeds.append(features.image_embeds.half().cpu())
            caption_embeds.append(model.encode_text(texts).half().cpu())
        captions.update(zip([r.item_id for r in chunk], texts, strict=True))
    scorer = CaptionScorer([r.item_id for r in records], torch.cat(image_embeds), torch.cat(caption_embeds),
                           encode_text=model.encode_text)
    return captions, scorer


def mine_collection(records: Sequence[ItemRecord], model, config: MiningConfig | None = None,
                    exclude_pairs: set[tuple[str, str]] | None = None,
                    progress: bool = True) -> tuple[MiningResult, dict[str, str], CaptionScorer]:
    """Caption ``records`` with ``model`` and mine them with every filter; returns the result, the
    captions and the scorer it used."""
    ids = [r.item_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("the collection has duplicate item ids")
    captions, scorer = caption_collection(model, records, progress=progress)
    result = mine_triplets(captions, scorer.agreement(), config, exclude_pairs, scorer, scorer.verify_edits)
    return result, captions, scorer
