"""Static negatives for UniFashion's phase 2 (``TrainRecipe.static_negatives_every``; off by default).

The bank holds Z (Q query embeddings) of every catalogue training image, computed from the cached
frozen vision features. The Q-Former still learns in phase 2, so the bank is recomputed every N
steps (:class:`unifashion.objectives.negatives.StaticNegativeBank`); ``phase2_loss`` adds it to the
``ITC(e_cls, Z_T)`` term (:func:`unifashion.objectives.negatives.unifashion_bank_itc`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unifashion.objectives.negatives import StaticNegativeBank
from unifashion.training.data import ImageBank
from unifashion.training.phase_objective import PhaseObjective


def unifashion_gallery_bank(model, image_bank: ImageBank, gallery_ids: Sequence[str], refresh_every: int | None,
                            batch_size: int = 128) -> StaticNegativeBank:
    """A bank of the model's Z for ``gallery_ids`` (ids in ``image_bank``), in the bank-index id space
    that ``TripletTrainDataset`` puts in ``batch["ids"]``."""
    ids = list(gallery_ids)
    index = torch.tensor([image_bank.index[i] for i in ids])

    def embed() -> torch.Tensor:
        was_training = model.training
        model.eval()  # no dropout in the negatives
        out = []
        for start in range(0, len(ids), batch_size):
            feats = image_bank.features(ids[start:start + batch_size]).to(model.device)
            out.append(model.get_image_features(vision_features=feats).image_embeds)
        model.train(was_training)
        return torch.cat(out)

    return StaticNegativeBank(embed, index, refresh_every)


class StaticNegativesObjective(PhaseObjective):
    """The phase-2 objective with the bank put into every batch (parameter names as PhaseObjective's,
    so checkpoints are interchangeable)."""

    def __init__(self, model, terms: list[str] | None, bank: StaticNegativeBank):
        super().__init__(model, 2, terms)
        self.bank = bank

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.training:
            batch = {**batch, "negative_bank": self.bank.current(), "negative_bank_ids": self.bank.ids}
        return super().forward(batch)
