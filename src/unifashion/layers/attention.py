"""Multi-head attention in the BERT layout, used for both self- and cross-attention.

Parameter names follow BERT / the transformers BLIP-2 Q-Former (``query``, ``key``, ``value``;
``output.dense``, ``output.LayerNorm``) so that pretrained checkpoints map onto these modules with
plain key renames. The attention itself runs through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate query/key/value projections.

    ``key_value_dim`` differs from ``hidden_size`` for cross-attention to image features (e.g.
    1408 for ViT-g, 1438 for the EfficientNet-Lite0 tokens).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        key_value_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        key_value_dim = key_value_dim or hidden_size
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(key_value_dim, hidden_size)
        self.value = nn.Linear(key_value_dim, hidden_size)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``hidden_states`` (B, T, H) to ``key_value_states`` (B, S, C), itself if None.

        ``attention_bias`` is additive, broadcastable to (B, heads, T, S): 0 where attention is
        allowed and a large negative number where it is not (see :mod:`unifashion.layers.masks`).
        """
        source = hidden_states if key_value_states is None else key_value_states
        query = self._split_heads(self.query(hidden_states))
        key = self._split_heads(self.key(source))
        value = self._split_heads(self.value(source))
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_bias,
            dropout_p=self.dropout if self.training else 0.0,
        )
        batch, _, length, _ = context.shape
        return context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)


class ResidualOutput(nn.Module):
    """BERT's post-sublayer block: ``LayerNorm(dropout(dense(x)) + residual)``."""

    def __init__(self, in_features: int, hidden_size: int, dropout: float, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        # The capitalised name is BERT's; keeping it lets checkpoints load by name.
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class AttentionBlock(nn.Module):
    """Attention followed by its residual output: one BERT attention sub-layer."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        key_value_dim: int | None = None,
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        layer_norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, key_value_dim, attention_dropout)
        self.output = ResidualOutput(hidden_size, hidden_size, hidden_dropout, layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context = self.attention(hidden_states, key_value_states, attention_bias)
        return self.output(context, hidden_states)
