"""Losses against direct re-computations written differently (explicit loops over pairs), both as
functions and as the model's phase 1 / phase 2 terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import CAPTIONS, MODIFICATIONS, build_small_model, random_images
from unifashion.objectives import losses

pytestmark = pytest.mark.usefixtures("single_thread")


def normalized(*shape, seed=0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ---------------------------------------------------------------------------- reference computations
def reference_max_similarity(image_queries, texts) -> list[list[float]]:
    rows = []
    for image in image_queries:
        row = []
        for text in texts:
            row.append(max(sum(float(a) * float(b) for a, b in zip(query, text, strict=True)) for query in image))
        rows.append(row)
    return rows


def reference_infonce(similarity: list[list[float]], temperature: float) -> float:
    """1/2 [ mean_i -log softmax_j(s_ij / tau)_i + mean_j -log softmax_i(s_ij / tau)_j ], by loops."""
    n = len(similarity)
    row_terms, column_terms = [], []
    for i in range(n):
        denominator = sum(math.exp(similarity[i][j] / temperature) for j in range(n))
        row_terms.append(-(similarity[i][i] / temperature - math.log(denominator)))
    for j in range(n):
        denominator = sum(math.exp(similarity[i][j] / temperature) for i in range(n))
        column_terms.append(-(similarity[j][j] / temperature - math.log(denominator)))
    return 0.5 * (sum(row_terms) / n + sum(column_terms) / n)


def reference_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        log_normaliser = math.log(sum(math.exp(v) for v in row))
        total += -(row[label] - log_normaliser)
    return total / len(labels)


# ---------------------------------------------------------------------------- the functions
def test_max_query_similarity_matches_loops():
    image_queries, texts = normalized(3, 5, 8), normalized(4, 8, seed=1)
    ours = losses.max_query_similarity(image_queries, texts)
    assert ours.shape == (3, 4)
    assert torch.allclose(ours, torch.tensor(reference_max_similarity(image_queries, texts)), atol=1e-6)


def test_itc_loss_matches_loops():
    image_queries, texts = normalized(4, 5, 8), normalized(4, 8, seed=1)
    loss, logits = losses.itc_loss(image_queries, texts, 0.07)
    expected = reference_infonce(reference_max_similarity(image_queries, texts), 0.07)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(logits * 0.07, torch.tensor(reference_max_similarity(image_queries, texts)), atol=1e-6)


def test_caption_itc_loss_matches_loops():
    fused, captions = normalized(4, 8), normalized(4, 8, seed=2)
    loss, _ = losses.caption_itc_loss(fused, captions, 0.1)
    similarity = [[float(f @ c) for c in captions] for f in fused]
    assert loss.item() == pytest.approx(reference_infonce(similarity, 0.1), rel=1e-5)


def test_itm_loss_matches_loops():
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    labels = losses.itm_labels(2)
    assert labels.tolist() == [1, 1, 0, 0, 0, 0]
    assert losses.itm_loss(logits, labels).item() == pytest.approx(reference_cross_entropy(logits, labels), rel=1e-6)


def test_cir_and_total_loss_are_sums():
    a, b, c = torch.tensor(1.5), torch.tensor(0.25), torch.tensor(2.0)
    assert losses.cir_loss(a, b, c).item() == pytest.approx(3.75)
    assert losses.total_loss(a, None, c).item() == pytest.approx(3.5)
    with pytest.raises(ValueError):
        losses.total_loss(None, None)


def test_hard_negatives_are_never_positives_and_follow_the_similarity():
    logits = torch.zeros(4, 4)
    logits[0, 2] = 50.0  # text 2 is by far the hardest negative for image 0
    logits[3, 1] = 50.0  # image 3 is by far the hardest negative for text 1
    for seed in range(20):
        negative_text, negative_image = losses.sample_hard_negatives(logits, torch.Generator().manual_seed(seed))
        assert all(negative_text[i] != i and negative_image[i] != i for i in range(4))
        assert negative_text[0] == 2 and negative_image[1] == 3
    # Items sharing an id are positives too and are never drawn.
    ids = torch.tensor([7, 7, 8, 9])
    for seed in range(20):
        negative_text, _ = losses.sample_hard_negatives(logits, torch.Generator().manual_seed(seed), ids)
        assert negative_text[0] not in (0, 1) and negative_text[1] not in (0, 1)
    with pytest.raises(ValueError):
        losses.sample_hard_negatives(torch.zeros(1, 1))


# ---------------------------------------------------------------------------- the model's terms
@pytest.fixture(scope="module")
def model():
    return build_small_model(seed=1).eval()  # eval: no dropout, so terms can be recomputed


def test_phase1_itc_and_itm_match_a_direct_recomputation(model):
    images = random_images(3, seed=5)
    batch = {"images": images, "captions": CAPTIONS}
    out = model.phase1_loss(batch, generator=torch.Generator().manual_seed(11), terms=("itc", "itm"))

    with torch.no_grad():
        image_queries = model.encode_image(images)
        texts = model.encode_text(CAPTIONS)
    temperature = model.temperature.item()
    similarity = reference_max_similarity(image_queries, texts)
    assert out.loss_itc.item() == pytest.approx(reference_infonce(similarity, temperature), rel=1e-4)

    # ITM: the same negatives (same generator), then each of the 3B pairs scored on its own.
    negative_text, negative_image = losses.sample_hard_negatives(
        torch.tensor(similarity) / temperature, torch.Generator().manual_seed(11)
    )
    pairs = [(i, i) for i in range(3)] + [(int(negative_image[i]), i) for i in range(3)]
    pairs += [(i, int(negative_text[i])) for i in range(3)]
    pixel_values = model.processor.preprocess_images(images)
    logits = []
    for image_index, text_index in pairs:
        match = model.itm_score(None, [CAPTIONS[text_index]], pixel_values=pixel_values[image_index : image_index + 1])
        logits.append(match.logits[0])
    expected = reference_cross_entropy(torch.stack(logits), losses.itm_labels(3))
    assert out.loss_itm.item() == pytest.approx(expected, rel=1e-4)
    assert out.loss.item() == pytest.approx(out.loss_itc.item() + out.loss_itm.item(), rel=1e-6)


def test_phase1_itg_and_q2i_match_their_components(model):
    images = random_images(2, seed=6)
    captions = CAPTIONS[:2]
    batch = {"images": images, "captions": captions, "styles": ["short", "detailed"]}
    out = model.phase1_loss(batch, generator=torch.Generator().manual_seed(3), terms=("itg", "q2i"))
    with torch.no_grad():
        query_output = model.get_image_features(images).query_output
        itg = model.caption_lm(query_output, captions, ["short", "detailed"]).loss
        text_queries = model.text_conditioned_queries(captions)  # q2i_condition="text"
        generation_images = model.processor.preprocess_generation_images(images, model.diffusion.image_size)
        q2i = model.diffusion.loss(generation_images, text_queries, generator=torch.Generator().manual_seed(3))
    assert out.loss_itg.item() == pytest.approx(itg.item(), rel=1e-5)
    assert out.loss_q2i.item() == pytest.approx(q2i.item(), rel=1e-5)
    assert out.loss_itc is None and out.loss_itm is None
    assert out.loss.item() == pytest.approx(itg.item() + q2i.item(), rel=1e-5)


def test_phase2_cir_terms_match_a_direct_recomputation(model):
    references, targets = random_images(3, seed=7), random_images(3, seed=8)
    generated = ["red dress", "blue shirt", "white top with dots"]
    batch = {
        "reference_images": references,
        "texts": MODIFICATIONS,
        "target_images": targets,
        "target_captions": CAPTIONS,
        "target_generated_captions": generated,
    }
    out = model.phase2_loss(batch, generator=torch.Generator().manual_seed(5))
    temperature = model.temperature.item()
    with torch.no_grad():
        fused = model.encode_composed(references, MODIFICATIONS)  # e_cls
        target_queries = model.encode_image(targets)  # Z_T
        caption_features = model.encode_text(generated)  # Z_C

    similarity = reference_max_similarity(target_queries, fused)  # [target i][fused j]
    assert out.loss_cir_itc_target.item() == pytest.approx(reference_infonce(similarity, temperature), rel=1e-4)
    caption_similarity = [[float(f @ c) for c in caption_features] for f in fused]
    expected_caption_itc = reference_infonce(caption_similarity, temperature)
    assert out.loss_cir_itc_caption.item() == pytest.approx(expected_caption_itc, rel=1e-4)

    negative_text, negative_target = losses.sample_hard_negatives(
        torch.tensor(similarity) / temperature, torch.Generator().manual_seed(5)
    )
    pairs = [(i, i) for i in range(3)] + [(int(negative_target[i]), i) for i in range(3)]
    pairs += [(i, int(negative_text[i])) for i in range(3)]
    pixel_values = model.processor.preprocess_images(targets)
    logits = [
        model.itm_score(None, [MODIFICATIONS[t]], pixel_values=pixel_values[i : i + 1]).logits[0] for i, t in pairs
    ]
    itm = reference_cross_entropy(torch.stack(logits), losses.itm_labels(3))
    assert out.loss_cir_itm.item() == pytest.approx(itm, rel=1e-4)
    assert out.loss_cir.item() == pytest.approx(
        out.loss_cir_itc_target.item() + out.loss_cir_itc_caption.item() + itm, rel=1e-5
    )

    # The generators read the fused queries of (reference, text).
    with torch.no_grad():
        fused_queries = model.get_composed_features(references, MODIFICATIONS).query_output
        itg = model.caption_lm(fused_queries, CAPTIONS, ["short"] * 3).loss
    assert out.loss_itg.item() == pytest.approx(itg.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.loss_cir.item() + out.loss_itg.item() + out.loss_q2i.item(), rel=1e-5)


def test_phase2_without_generated_captions_has_no_caption_term(model):
    # Table 5's Base (no caption LM, no caption fusion) must not learn ITC(e_cls, Z_C) from the
    # ground-truth captions: +LLM and the paper's Base see no such supervision.
    references, targets = random_images(2, seed=7), random_images(2, seed=8)
    batch = {"reference_images": references, "texts": MODIFICATIONS[:2], "target_images": targets,
             "target_captions": CAPTIONS[:2]}
    out = model.phase2_loss(batch, generator=torch.Generator().manual_seed(0), terms=("cir",))
    assert out.loss_cir_itc_caption is None
    assert out.loss_cir.item() == pytest.approx(out.loss_cir_itc_target.item() + out.loss_cir_itm.item(), rel=1e-6)
    # The ground-truth captions change nothing: they are not read by the retrieval terms.
    other = model.phase2_loss({**batch, "target_captions": ["x", "y"]}, generator=torch.Generator().manual_seed(0),
                              terms=("cir",))
    assert other.loss_cir.item() == pytest.approx(out.loss_cir.item(), rel=1e-6)
    assert out.loss_itg is None and out.loss_q2i is None


def test_itm_max_pairs_limits_the_itm_batch(single_thread):
    model = build_small_model(itm_max_pairs=2)
    seen = []
    original = model._itm_logits

    def spy(input_ids, *args):
        seen.append(input_ids.shape[0])
        return original(input_ids, *args)

    model._itm_logits = spy
    model.set_phase(1, "qformer")
    out = model.phase1_loss({"images": random_images(3), "captions": CAPTIONS})
    assert seen == [6]  # 2 positives, 2 negative images, 2 negative texts
    assert torch.isfinite(out.loss_itm)
