"""BERT-style building blocks of the Q-Former: text embeddings and a layer with cross-attention.

The layer follows BLIP-2's Q-Former layer: self-attention is shared by the learnable queries and
the text, cross-attention to the image features is applied to the query positions only (and only
in every ``cross_attention_freq``-th layer), and queries and text have separate feed-forward
networks (``intermediate_query``/``output_query`` for queries, ``intermediate``/``output`` for
text). Module names match BERT and transformers' ``Blip2QFormerLayer`` so checkpoints map by name.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from unifashion.layers.attention import AttentionBlock, ResidualOutput


class TextEmbeddings(nn.Module):
    """Word + absolute position embeddings (no LayerNorm: the Q-Former applies one LayerNorm to
    the concatenated ``[queries ; text]`` sequence, as BLIP-2 does)."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int, pad_token_id: int = 0):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text of {length} tokens is longer than max_position_embeddings "
                f"{self.position_embeddings.num_embeddings}"
            )
        positions = torch.arange(length, device=input_ids.device)
        return self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]


class Intermediate(nn.Module):
    """The expanding half of BERT's feed-forward network: ``act(dense(x))``."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden_states))


class QFormerLayer(nn.Module):
    """One Q-Former layer over ``[queries ; text]`` with optional cross-attention for the queries."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        attention_dropout: float = 0.1,
        hidden_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        encoder_width: int | None = None,
    ):
        super().__init__()
        self.attention = AttentionBlock(
            hidden_size, num_heads, None, attention_dropout, hidden_dropout, layer_norm_eps
        )
        # None when this layer has no cross-attention (BLIP-2 adds it every `cross_attention_freq`).
        self.crossattention = (
            AttentionBlock(hidden_size, num_heads, encoder_width, attention_dropout, hidden_dropout, layer_norm_eps)
            if encoder_width is not None
            else None
        )
        self.intermediate = Intermediate(hidden_size, intermediate_size, hidden_act)
        self.output = ResidualOutput(intermediate_size, hidden_size, hidden_dropout, layer_norm_eps)
        self.intermediate_query = Intermediate(hidden_size, intermediate_size, hidden_act)
        self.output_query = ResidualOutput(intermediate_size, hidden_size, hidden_dropout, layer_norm_eps)

    @property
    def has_cross_attention(self) -> bool:
        return self.crossattention is not None

    def forward(
        self,
        hidden_states: torch.Tensor,
        num_queries: int,
        self_attention_bias: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_attention_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` (B, Q+L, H) -> (B, Q+L, H).

        Cross-attention is skipped when ``image_features`` is None: the queries then carry only
        what they read from the text (used to condition the generators on text alone).
        """
        attended = self.attention(hidden_states, attention_bias=self_attention_bias)
        parts = []
        if num_queries > 0:
            queries = attended[:, :num_queries]
            if self.crossattention is not None and image_features is not None:
                queries = self.crossattention(queries, image_features, image_attention_bias)
            parts.append(self.output_query(self.intermediate_query(queries), queries))
        if attended.shape[1] > num_queries:
            text = attended[:, num_queries:]
            parts.append(self.output(self.intermediate(text), text))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
