"""UniFashion's two phase losses over its components: phase 1 (ITC, ITM, ITG, q2I and the VAE's
autoencoder term) on image-caption pairs and phase 2 (L_cir, ITG, q2I) on CIR triplets.

:meth:`UniFashion.phase1_loss` / :meth:`UniFashion.phase2_loss` call these; the equations are in
:mod:`unifashion.objectives.losses`, each phase's default terms in :mod:`unifashion.objectives.phases`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from unifashion.layers import MaskType
from unifashion.models.outputs import Phase1Output, Phase2Output
from unifashion.objectives import losses, phases


def loss_terms(model, phase: int, terms: Sequence[str] | None) -> tuple[str, ...]:
    """The terms a phase loss sums: ``terms`` when given; in the phase the model is in
    (:meth:`UniFashion.set_phase`), that stage's; outside it, every term of the paper's stages of
    the phase that the model's components allow (a model without a caption LM has no ITG)."""
    if terms is not None:
        return phases.check_terms(terms)
    if model.phase == phase:
        return phases.phase_of(phase, model.stage).terms
    absent = {"itg": model.caption_lm is None, "q2i": model.diffusion is None}
    return tuple(t for t in phases.paper_terms(phase) if not absent.get(t, False))


def generation_images(model, batch: dict[str, Any], raw_key: str, ready_key: str) -> torch.Tensor:
    """The batch's images at the diffusion size in [0, 1]: ``batch[ready_key]`` when the data gave
    them ready, else ``batch[raw_key]`` preprocessed."""
    diffusion = model._require("diffusion")
    if batch.get(ready_key) is not None:
        return batch[ready_key].to(model.device)
    return model.processor.preprocess_generation_images(batch[raw_key], diffusion.image_size).to(model.device)


def phase1_loss(
    model,
    batch: dict[str, Any],
    generator: torch.Generator | None = None,
    terms: Sequence[str] | None = None,
) -> Phase1Output:
    """Phase 1 (cross-modal pre-training) on image-caption pairs.

    ``batch``: ``images`` (PIL list or (B, 3, H, W) in [0, 1]) or ``pixel_values`` (processed),
    ``captions`` (B strings); optional ``styles`` (caption style per pair, for ITG),
    ``generation_images`` ((B, 3, S, S) in [0, 1] at the diffusion size; else from ``images``)
    and ``ids`` ((B,) item ids, tensor or strings: same id = same item, never a hard negative).
    ``terms`` defaults to the stage's (see :meth:`UniFashion.set_phase`); outside phase 1, all four.
    ``generator`` drives the hard-negative draw and the diffusion noise.
    """
    terms = loss_terms(model, 1, terms)
    out = Phase1Output()
    captions = list(batch["captions"])
    styles = list(batch.get("styles") or [model.config.caption_style] * len(captions))

    if "vae" in terms:
        images = generation_images(model, batch, "images", "generation_images")
        out.loss_vae = model._require("diffusion").autoencoder_loss(images, generator=generator)
    if any(t in terms for t in ("itc", "itm", "itg")) or ("q2i" in terms and model.config.q2i_condition == "image"):
        image = model.get_image_features(batch.get("images"), batch.get("pixel_values"),
                                         batch.get("vision_features"))
    if "itc" in terms or "itm" in terms:
        tokens = model._tokens(captions)
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        loss_itc, logits = losses.itc_loss(image.image_embeds, text.text_embeds, model.clamped_temperature())
        out.logits_per_image = logits
        if "itc" in terms:
            out.loss_itc = loss_itc
        if "itm" in terms:
            out.loss_itm = itm_loss(
                model, logits, tokens, image.vision_features, image.vision_attention_mask, generator, batch.get("ids")
            )
    if "itg" in terms:
        out.loss_itg = model._require("caption_lm")(image.query_output, captions, styles).loss
    if "q2i" in terms:
        diffusion = model._require("diffusion")
        if model.config.q2i_condition == "image":
            condition = image.query_output
        else:
            with model._grad_context(model.qformer):
                condition = model.text_conditioned_queries(captions)
        images = generation_images(model, batch, "images", "generation_images")
        out.loss_q2i = diffusion.loss(images, condition, generator=generator)
    out.loss = losses.total_loss(out.loss_itc, out.loss_itm, out.loss_itg, out.loss_q2i, out.loss_vae)
    return out


def itm_loss(model, logits, tokens, vision_features, vision_mask, generator, ids) -> torch.Tensor:
    """L_ITM with BLIP-2's layout ``[(I_i, T_i) ; (I_neg(i), T_i) ; (I_i, T_neg(i))]``.

    ``logits[i, j]`` scores image i against text j; the negatives are drawn from it."""
    if ids is not None and not isinstance(ids, torch.Tensor):  # item ids as strings: number them
        numbering: dict[Any, int] = {}
        ids = torch.tensor([numbering.setdefault(item, len(numbering)) for item in ids])
    negative_text, negative_image = losses.sample_hard_negatives(logits, generator, ids)
    input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
    rows = torch.arange(logits.shape[0], device=logits.device)
    limit = model.config.itm_max_pairs
    if limit is not None and limit < logits.shape[0]:
        # A random subset of rows, each with the hard negatives drawn over the whole batch.
        rows = torch.randperm(logits.shape[0], generator=generator, device=generator.device if generator
                              is not None else "cpu").to(logits.device)[:limit]
    neg_text, neg_image = negative_text[rows], negative_image[rows]
    ids_all = torch.cat([input_ids[rows], input_ids[rows], input_ids[neg_text]])
    mask_all = torch.cat([attention_mask[rows], attention_mask[rows], attention_mask[neg_text]])
    features_all = torch.cat([vision_features[rows], vision_features[neg_image], vision_features[rows]])
    vision_mask_all = torch.cat([vision_mask[rows], vision_mask[neg_image], vision_mask[rows]])
    itm_logits = model._itm_logits(ids_all, mask_all, features_all, vision_mask_all)
    return losses.itm_loss(itm_logits, losses.itm_labels(len(rows), itm_logits.device))


def phase2_loss(
    model,
    batch: dict[str, Any],
    generator: torch.Generator | None = None,
    terms: Sequence[str] | None = None,
) -> Phase2Output:
    """Phase 2 (composed multimodal fine-tuning) on CIR triplets.

    ``batch``: ``reference_images`` / ``reference_pixel_values``, ``texts`` (the modifying
    texts t), ``target_images`` / ``target_pixel_values``, ``target_captions`` (ITG targets);
    optional ``target_generated_captions`` (the captions the model itself wrote for the
    targets, e.g. ``model.caption(target_images)`` cached once per epoch, for Z_C; without
    them ``L_cir`` has no ``ITC(e_cls, Z_C)`` term and ``loss_cir_itc_caption`` is None),
    ``target_generation_images``, ``styles`` and ``ids`` (target item ids, tensor or
    strings); ``negative_bank`` ((M, Q, D) gallery Z) with ``negative_bank_ids`` ((M,) in
    the id space of ``ids``) adds static negatives to ``ITC(e_cls, Z_T)`` (off by
    default; see :mod:`unifashion.objectives.negatives`). The fused queries of (reference, t)
    condition both generators: ITG writes the target's caption and q2I draws the target image.
    """
    terms = loss_terms(model, 2, terms)
    out = Phase2Output()
    texts = list(batch["texts"])
    target_captions = list(batch["target_captions"])
    styles = list(batch.get("styles") or [model.config.caption_style] * len(texts))

    tokens = model._tokens(texts)
    reference = model._vision(batch.get("reference_images"), batch.get("reference_pixel_values"),
                              batch.get("reference_vision_features"))
    fused = model.qformer(
        tokens["input_ids"], tokens["attention_mask"], reference.features, reference.attention_mask,
        mask_type=MaskType.BIDIRECTIONAL,
    )
    fused_queries = fused.query_output
    if "cir" in terms:
        e_cls = F.normalize(model.text_projection(fused.text_output[:, 0]), dim=-1)
        target = model.get_image_features(batch.get("target_images"), batch.get("target_pixel_values"),
                                          batch.get("target_vision_features"))
        temperature = model.clamped_temperature()
        # logits[i, j] = s(T_i, e_cls_j): target image i against fused query j.
        itc_target, logits = losses.itc_loss(target.image_embeds, e_cls, temperature)
        if batch.get("negative_bank") is not None:
            # Static negatives (off unless the batch carries a bank): unifashion.objectives.negatives.
            from unifashion.objectives.negatives import unifashion_bank_itc

            if not isinstance(batch.get("ids"), torch.Tensor):
                raise ValueError("static negatives need batch['ids']: the targets' bank indices as a tensor")
            itc_target = unifashion_bank_itc(logits, e_cls, batch["negative_bank"], temperature, batch["ids"],
                                             batch["negative_bank_ids"])
        # ITC(e_cls, Z_C) needs the model's own captions of the targets. Without them the term
        # is left out: ground-truth captions in their place would give a model without a
        # caption LM (Table 5's Base) supervision that the paper's Base does not have.
        itc_caption = None
        generated = batch.get("target_generated_captions")
        if generated is not None:
            caption_embeds = model.get_text_features(list(generated)).text_embeds
            itc_caption, _ = losses.caption_itc_loss(e_cls, caption_embeds, temperature)
        itm = itm_loss(model, logits, tokens, target.vision_features, target.vision_attention_mask, generator,
                       batch.get("ids"))
        out.loss_cir_itc_target, out.loss_cir_itc_caption, out.loss_cir_itm = itc_target, itc_caption, itm
        out.loss_cir = losses.cir_loss(itc_target, itc_caption, itm)
        out.logits_per_target = logits
    if "itg" in terms:
        out.loss_itg = model._require("caption_lm")(fused_queries, target_captions, styles).loss
    if "q2i" in terms:
        images = generation_images(model, batch, "target_images", "target_generation_images")
        out.loss_q2i = model._require("diffusion").loss(images, fused_queries, generator=generator)
    out.loss = losses.total_loss(out.loss_cir, out.loss_itg, out.loss_q2i)
    return out
