"""The Q-Former's three self-attention masks (BLIP-2, Li et al. 2023, Fig. 2 right).

The Q-Former runs one sequence ``[queries (Q) ; text (L)]`` through shared self-attention layers;
which position may attend to which decides the task:

* ``unimodal`` (ITC): queries see only queries, text sees only text, so the query outputs are
  pure image features and the text outputs pure text features.
* ``bidirectional`` (ITM and the CIR fused query): every position sees every position.
* ``causal`` (multimodal-causal, ITG): queries see only queries; text token ``i`` sees all
  queries and the text tokens ``<= i``.

Padded text positions are never attended to as keys. Masks are boolean with ``True`` meaning
"may attend"; :func:`attention_bias` turns them into the additive form attention layers use.
"""

from __future__ import annotations

from enum import StrEnum

import torch


class MaskType(StrEnum):
    UNIMODAL = "unimodal"
    BIDIRECTIONAL = "bidirectional"
    CAUSAL = "causal"


def build_qformer_mask(
    num_queries: int,
    text_attention_mask: torch.Tensor | None,
    mask_type: MaskType | str,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Boolean self-attention mask (B, Q+L, Q+L) for a ``[queries ; text]`` sequence.

    Args:
        num_queries: Q, the number of query positions at the front (0 for text alone).
        text_attention_mask: (B, L) with 1 for real tokens and 0 for padding, or None (no text).
        mask_type: one of :class:`MaskType`.
        batch_size, device: needed only when there is no text.
    """
    mask_type = MaskType(mask_type)
    if text_attention_mask is None:
        if batch_size is None:
            raise ValueError("batch_size is needed when there is no text")
        text_valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
    else:
        text_valid = text_attention_mask.bool()
        device = text_valid.device
    batch, text_length = text_valid.shape
    total = num_queries + text_length

    is_query = torch.zeros(total, dtype=torch.bool, device=device)
    is_query[:num_queries] = True
    is_text = ~is_query
    rows_query, cols_query = is_query[:, None], is_query[None, :]
    rows_text, cols_text = is_text[:, None], is_text[None, :]

    if mask_type is MaskType.BIDIRECTIONAL:
        structure = torch.ones(total, total, dtype=torch.bool, device=device)
    elif mask_type is MaskType.UNIMODAL:
        structure = (rows_query & cols_query) | (rows_text & cols_text)
    else:  # causal: queries among themselves; text sees every query and earlier-or-same text
        position = torch.arange(total, device=device)
        not_later = position[None, :] <= position[:, None]
        structure = (rows_query & cols_query) | (rows_text & cols_query) | (rows_text & cols_text & not_later)

    key_valid = torch.cat(
        [torch.ones(batch, num_queries, dtype=torch.bool, device=device), text_valid], dim=1
    )
    return structure[None, :, :] & key_valid[:, None, :]


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention bias (B, 1, T, S) from a boolean mask (B, T, S) or key mask (B, S).

    Uses the dtype's most negative finite value instead of ``-inf`` so that a row with nothing
    to attend to (never produced by the masks above) yields a uniform average, not NaN.
    """
    if allowed.dim() == 2:  # key padding mask (B, S): the same for every query row
        allowed = allowed[:, None, :]
    allowed = allowed.bool()
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[:, None, :, :]
