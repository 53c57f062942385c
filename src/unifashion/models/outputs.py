"""Typed outputs of :class:`~unifashion.models.unifashion.UniFashion`'s feature and loss methods,
as transformers' ``ModelOutput`` dataclasses (attribute and key access both work)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class ImageFeaturesOutput(ModelOutput):
    """``image_embeds``: (B, Q, D) normalised ITC embeddings Z; ``query_output``: (B, Q, H) the
    Q-Former's query outputs (what the generators read); ``vision_features``/``vision_attention_mask``:
    the frozen encoder's tokens (B, N, C) and mask (B, N)."""

    image_embeds: torch.Tensor | None = None
    query_output: torch.Tensor | None = None
    vision_features: torch.Tensor | None = None
    vision_attention_mask: torch.Tensor | None = None


@dataclass
class TextFeaturesOutput(ModelOutput):
    """``text_embeds``: (B, D) normalised ``[CLS]`` embeddings; ``text_output``: (B, L, H)."""

    text_embeds: torch.Tensor | None = None
    text_output: torch.Tensor | None = None


@dataclass
class ComposedFeaturesOutput(ModelOutput):
    """The CIR fused query. ``composed_embeds``: (B, D) normalised e_cls; ``query_output``: (B, Q, H)
    the fused queries (condition the generators on reference image + text); ``text_output``: (B, L, H)."""

    composed_embeds: torch.Tensor | None = None
    query_output: torch.Tensor | None = None
    text_output: torch.Tensor | None = None


@dataclass
class ImageTextMatchingOutput(ModelOutput):
    """``logits``: (B, 2) ITM logits (no match, match); ``probability``: (B,) softmax of "match"."""

    logits: torch.Tensor | None = None
    probability: torch.Tensor | None = None


@dataclass
class Phase1Output(ModelOutput):
    """Phase 1: ``loss = loss_itc + loss_itm + loss_itg + loss_q2i`` over the terms computed
    (``None`` = not computed in this stage). ``loss_vae`` is the tiny preset's autoencoder
    stage (not a paper term). ``logits_per_image``: (B, B) ITC logits s(I_i, T_j) / tau."""

    loss: torch.Tensor | None = None
    loss_itc: torch.Tensor | None = None
    loss_itm: torch.Tensor | None = None
    loss_itg: torch.Tensor | None = None
    loss_q2i: torch.Tensor | None = None
    loss_vae: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None


@dataclass
class Phase2Output(ModelOutput):
    """Phase 2: ``loss = loss_cir + loss_itg + loss_q2i`` with
    ``loss_cir = loss_cir_itc_target + loss_cir_itc_caption + loss_cir_itm``.
    ``logits_per_target``: (B, B) s(T_i, e_cls_j) / tau."""

    loss: torch.Tensor | None = None
    loss_cir: torch.Tensor | None = None
    loss_cir_itc_target: torch.Tensor | None = None
    loss_cir_itc_caption: torch.Tensor | None = None
    loss_cir_itm: torch.Tensor | None = None
    loss_itg: torch.Tensor | None = None
    loss_q2i: torch.Tensor | None = None
    logits_per_target: torch.Tensor | None = None
