"""Static negatives: the loss against a loop re-computation, the bank's refresh schedule, and the
option in UniFashion's phase 2 (off by default; with a bank, ITC(e_cls, Z_T) gains the negatives)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import CAPTIONS, MODIFICATIONS
from unifashion.objectives.negatives import (
    StaticNegativeBank,
    bank_positive_mask,
    contrastive_loss_with_bank,
    unifashion_bank_itc,
)


def _loop_loss(logits, bank_logits, target_ids, bank_ids):
    """The definition, one query and one target at a time, with Python floats."""
    b = logits.shape[0]
    q2t = 0.0
    for i in range(b):
        row = [float(logits[i, j]) for j in range(b)]
        row += [float(bank_logits[i, k]) for k in range(bank_logits.shape[1]) if bank_ids[k] != target_ids[i]]
        q2t += -(row[i] - math.log(sum(math.exp(v) for v in row)))
    t2q = 0.0
    for j in range(b):
        col = [float(logits[i, j]) for i in range(b)]
        t2q += -(col[j] - math.log(sum(math.exp(v) for v in col)))
    return 0.5 * (q2t / b + t2q / b)


def test_bank_loss_matches_a_loop_recomputation():
    torch.manual_seed(0)
    logits = torch.randn(4, 4) * 3
    bank_logits = torch.randn(4, 7) * 3
    target_ids = torch.tensor([2, 5, 0, 6])
    bank_ids = torch.arange(7)
    mask = bank_positive_mask(target_ids, bank_ids)
    assert mask.sum() == 4 and mask[0, 2] and mask[1, 5] and not mask[0, 5]
    got = contrastive_loss_with_bank(logits, bank_logits, mask)
    assert got.item() == pytest.approx(_loop_loss(logits, bank_logits, target_ids.tolist(), bank_ids.tolist()),
                                       rel=1e-5)
    # Without a bank it is CLIP's symmetric loss; more negatives can only raise the query side.
    plain = contrastive_loss_with_bank(logits)
    targets = torch.arange(4)
    assert plain.item() == pytest.approx(0.5 * (F.cross_entropy(logits, targets) +
                                                F.cross_entropy(logits.t(), targets)).item(), rel=1e-6)
    assert got > plain
    # A bank made only of the positives changes nothing: they are masked out.
    only_positives = contrastive_loss_with_bank(logits, bank_logits[:, :1].expand(4, 3).clone(),
                                                torch.ones(4, 3, dtype=torch.bool))
    assert only_positives.item() == pytest.approx(plain.item(), rel=1e-6)


def test_bank_refreshes_on_schedule_and_resumes():
    calls = []

    def embed():
        calls.append(len(calls))
        return torch.full((3, 2), float(len(calls)))

    bank = StaticNegativeBank(embed, torch.arange(3), refresh_every=3)
    seen = [bank.current()[0, 0].item() for _ in range(7)]
    assert seen == [1, 1, 1, 2, 2, 2, 3] and bank.refreshes == 3
    frozen = StaticNegativeBank(embed, torch.arange(3), refresh_every=None)
    for _ in range(5):
        frozen.current()
    assert frozen.refreshes == 1
    resumed = StaticNegativeBank(embed, torch.arange(3), refresh_every=3)
    resumed.step = 6  # a resumed run at a refresh step refreshes exactly there, then on schedule
    for _ in range(4):
        resumed.current()
    assert resumed.refreshes == 2
    with pytest.raises(ValueError, match="refresh_every"):
        StaticNegativeBank(embed, torch.arange(3), refresh_every=0)


def _phase2_batch(images, bank_index):
    return {"reference_images": images, "texts": MODIFICATIONS, "target_images": images.flip(0),
            "target_captions": CAPTIONS, "target_generated_captions": ["red dress", "blue shirt", "a top"],
            "ids": bank_index}


def test_unifashion_phase2_static_negatives_change_only_the_target_itc(small_model, images, single_thread):
    model = small_model
    bank_images = torch.rand(5, 3, 40, 36, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        bank = torch.cat([model.get_image_features(images.flip(0)).image_embeds,
                          model.get_image_features(bank_images).image_embeds])
    bank_ids = torch.arange(8)
    target_ids = torch.tensor([0, 1, 2])  # the targets are bank entries 0..2
    batch = _phase2_batch(images, target_ids)
    with torch.no_grad():
        plain = model.phase2_loss(batch, generator=torch.Generator().manual_seed(0), terms=("cir",))
        banked = model.phase2_loss({**batch, "negative_bank": bank, "negative_bank_ids": bank_ids},
                                   generator=torch.Generator().manual_seed(0), terms=("cir",))
        # The loop re-computation: e_cls against the targets and the bank, by the definition.
        e_cls = model.get_composed_features(images, MODIFICATIONS).composed_embeds
        z_t = model.get_image_features(images.flip(0)).image_embeds
        tau = model.clamped_temperature()
        logits = torch.stack([torch.stack([(z_t[j] @ e_cls[i]).max() for j in range(3)]) for i in range(3)]) / tau
        bank_logits = torch.stack([torch.stack([(bank[k] @ e_cls[i]).max() for k in range(8)]) for i in range(3)]) / tau
    expected = _loop_loss(logits, bank_logits, target_ids.tolist(), bank_ids.tolist())
    assert banked.loss_cir_itc_target.item() == pytest.approx(expected, rel=1e-4)
    assert banked.loss_cir_itc_target > plain.loss_cir_itc_target
    # The other terms are untouched (same hard-negative draw, same caption term).
    assert banked.loss_cir_itc_caption.item() == pytest.approx(plain.loss_cir_itc_caption.item(), rel=1e-6)
    assert banked.loss_cir_itm.item() == pytest.approx(plain.loss_cir_itm.item(), rel=1e-6)
    # The function the model calls is the one tested above.
    direct = unifashion_bank_itc(plain.logits_per_target, e_cls, bank, tau, target_ids, bank_ids)
    assert direct.item() == pytest.approx(banked.loss_cir_itc_target.item(), rel=1e-5)
    with pytest.raises(ValueError, match="ids"):
        model.phase2_loss({**batch, "ids": ["a", "b", "c"], "negative_bank": bank, "negative_bank_ids": bank_ids},
                          terms=("cir",))
