"""UniFashion's training losses, as plain functions of tensors.

The paper (Zhao et al., arXiv 2408.11305, Sec. 3, "Phase 1: cross-modal pre-training" and
"Phase 2: composed multimodal fine-tuning") trains with

* Phase 1: ``L = L_ITC + L_ITM + L_ITG + L_q2I``;
* Phase 2: ``L = L_cir + L_ITG(target caption) + L_q2I(target image)`` with
  ``L_cir = ITC(e_cls, Z_T) + ITC(e_cls, Z_C) + ITM(t, Z_T)``.

The equations are cited here by their names in the paper (the paper text was not at hand to
check its equation numbers). ``L_ITG`` (next-token cross entropy of the caption given
``TSA_llm(Z)``) lives in :meth:`unifashion.models.caption_lm.CaptionLM.forward` and ``L_q2I``
(noise-prediction MSE given ``TSA_diff(Z)``) in
:meth:`unifashion.models.diffusion.QueryConditionedDiffusion.loss`; the functions below are the
Q-Former's terms and the sums.

Notation: ``Z`` (B, Q, D) are an image's Q query embeddings after ``vision_projection``,
L2-normalised; ``t`` (B, D) a text's ``[CLS]`` embedding after ``text_projection``, normalised;
``tau`` the learnable temperature. Row ``i`` of a batch is the positive pair of row ``i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def max_query_similarity(image_query_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """``s(I_i, T_j) = max_q <Z_i,q , t_j>``: (Bi, Q, D) x (Bt, D) -> (Bi, Bt).

    The similarity BLIP-2 and UniFashion use for ITC and retrieval: the best-matching query.
    """
    per_query = torch.einsum("iqd,jd->ijq", image_query_embeds, text_embeds)
    return per_query.max(dim=-1).values


def symmetric_contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """InfoNCE in both directions over a (B, B) logit matrix whose diagonal holds the positives:
    ``1/2 [ CE(rows) + CE(columns) ]``, each averaged over the batch."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def itc_loss(
    image_query_embeds: torch.Tensor, text_embeds: torch.Tensor, temperature: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-text contrastive loss ``L_ITC`` (paper, Phase 1; BLIP-2's ITC).

    ``L_ITC = -1/(2B) sum_i [ log softmax_j( s(I_i,T_j)/tau )_i + log softmax_j( s(I_j,T_i)/tau )_i ]``
    with ``s`` the max over queries (:func:`max_query_similarity`). Also used for
    ``ITC(e_cls, Z_T)`` in ``L_cir``, with the fused query ``e_cls`` in the role of the text.

    Returns ``(loss, logits)`` with ``logits[i, j] = s(I_i, T_j) / tau`` (image i, text j).
    """
    logits = max_query_similarity(image_query_embeds, text_embeds) / temperature
    return symmetric_contrastive_loss(logits), logits


def caption_itc_loss(
    fused_embeds: torch.Tensor, caption_embeds: torch.Tensor, temperature: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ITC(e_cls, Z_C)`` in ``L_cir``: contrast the fused query with the target caption's text
    feature ``Z_C`` (one vector per caption, so no max over queries):
    ``logits[i, j] = <e_cls_i, Z_C_j> / tau``, symmetric InfoNCE. Returns ``(loss, logits)``."""
    logits = fused_embeds @ caption_embeds.t() / temperature
    return symmetric_contrastive_loss(logits), logits


def sample_hard_negatives(
    logits: torch.Tensor,
    generator: torch.Generator | None = None,
    ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP-2's hard-negative mining for ITM, from the ITC logits (image i, text j).

    For each image, a negative text is drawn with probability ``softmax_j(logits[i, j])`` over the
    texts that are not its positive; for each text, a negative image likewise from the columns.
    Pairs sharing an ``ids`` entry (the same item twice in a batch) count as positives and are
    never drawn. Returns ``(negative_text_for_image, negative_image_for_text)``, both (B,) indices.
    """
    batch = logits.shape[0]
    if batch < 2:
        raise ValueError("ITM hard negatives need a batch of at least 2 pairs")
    with torch.no_grad():
        if ids is None:
            positive = torch.eye(batch, dtype=torch.bool, device=logits.device)
        else:
            ids = ids.to(logits.device).view(-1)
            positive = ids[:, None] == ids[None, :]
        logits = logits.detach().float()
        weights_i2t = F.softmax(logits, dim=1).masked_fill(positive, 0.0)
        weights_t2i = F.softmax(logits.t(), dim=1).masked_fill(positive, 0.0)
        # A row with no true negative in the batch (every item shares its id) draws uniformly.
        for weights in (weights_i2t, weights_t2i):
            weights[weights.sum(1) == 0] = 1.0
        draw_device = generator.device if generator is not None else weights_i2t.device
        negative_text = torch.multinomial(weights_i2t.to(draw_device), 1, generator=generator).view(-1)
        negative_image = torch.multinomial(weights_t2i.to(draw_device), 1, generator=generator).view(-1)
    return negative_text.to(logits.device), negative_image.to(logits.device)


def itm_labels(batch_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Labels for the ITM batch layout ``[positives (B) ; (I_neg, T) (B) ; (I, T_neg) (B)]``."""
    return torch.cat(
        [torch.ones(batch_size, dtype=torch.long), torch.zeros(2 * batch_size, dtype=torch.long)]
    ).to(device)


def itm_loss(itm_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-text matching loss ``L_ITM`` (paper, Phase 1; BLIP-2's ITM): binary cross entropy
    (as 2-way softmax) of the ITM head, whose logits are averaged over the query outputs of the
    bidirectional pass, over positives and the hard negatives of :func:`sample_hard_negatives`.
    Also ``ITM(t, Z_T)`` in ``L_cir``."""
    return F.cross_entropy(itm_logits, labels)


def cir_loss(itc_target: torch.Tensor, itc_caption: torch.Tensor | None, itm: torch.Tensor) -> torch.Tensor:
    """``L_cir = ITC(e_cls, Z_T) + ITC(e_cls, Z_C) + ITM(t, Z_T)`` (paper, Phase 2); without Z_C
    (no caption LM, no caption fusion: Table 5's Base) ``ITC(e_cls, Z_T) + ITM(t, Z_T)``."""
    if itc_caption is None:
        return itc_target + itm
    return itc_target + itc_caption + itm


def total_loss(*terms: torch.Tensor | None) -> torch.Tensor:
    """The unweighted sum of the terms that were computed (None terms were skipped by the stage):
    Phase 1 ``L_ITC + L_ITM + L_ITG + L_q2I``; Phase 2 ``L_cir + L_ITG + L_q2I``."""
    present = [t for t in terms if t is not None]
    if not present:
        raise ValueError("no loss term was computed")
    return torch.stack([t.float() for t in present]).sum()
