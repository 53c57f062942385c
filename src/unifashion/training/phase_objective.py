"""What the trainer optimises in a UniFashion phase: the model's phase loss as named terms.

Its own module so that the recipe (:mod:`unifashion.training.recipe`) and the objectives built on
it (:mod:`unifashion.training.static_negatives`) both import it without importing each other.
"""

from __future__ import annotations

import torch
from torch import nn


class PhaseObjective(nn.Module):
    """``forward(batch)`` = the model's phase loss as a dict of terms (what the trainer logs)."""

    def __init__(self, model, phase: int, terms: list[str] | None = None):
        super().__init__()
        self.model = model
        self.phase = phase
        self.terms = tuple(terms) if terms else None

    def parameter_group(self, name: str) -> list[nn.Parameter]:
        """The model's named parameter group (per-module optimiser settings address these)."""
        return self.model.parameter_group(name)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        loss_fn = self.model.phase1_loss if self.phase == 1 else self.model.phase2_loss
        out = loss_fn(batch, terms=self.terms)
        return {("loss" if k == "loss" else k.removeprefix("loss_")): v
                for k, v in out.items() if k.startswith("loss") and v is not None}
