"""Building blocks of the UniFashion model: attention, masks and BERT-style Q-Former layers."""

from unifashion.layers.adapter import TaskSpecificAdapter
from unifashion.layers.attention import AttentionBlock, MultiHeadAttention, ResidualOutput
from unifashion.layers.bert import Intermediate, QFormerLayer, TextEmbeddings
from unifashion.layers.masks import MaskType, attention_bias, build_qformer_mask

__all__ = [
    "AttentionBlock",
    "Intermediate",
    "MaskType",
    "MultiHeadAttention",
    "QFormerLayer",
    "ResidualOutput",
    "TaskSpecificAdapter",
    "TextEmbeddings",
    "attention_bias",
    "build_qformer_mask",
]
