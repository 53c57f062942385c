"""The paper's task-specific adapters (TSA): a linear map from the Q-Former's query outputs to the
input space of a generator (the LLM's embeddings, the UNet's cross-attention)."""

from __future__ import annotations

import torch
from torch import nn


class TaskSpecificAdapter(nn.Module):
    """Linear(query_dim -> out_dim), applied to every query."""

    def __init__(self, query_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(query_dim, out_dim)

    def forward(self, query_embeds: torch.Tensor) -> torch.Tensor:
        return self.proj(query_embeds)
