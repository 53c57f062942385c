"""Metrics against references computed another way: hand-made rankings, known captions, numpy FID."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import requires
from unifashion.evaluation import (
    caption_metrics,
    cir_fashioniq,
    cmr_full_gallery,
    cmr_random_100,
    draw_random_candidates,
    fid,
    kid,
    random_candidates,
    ranks_of_positives,
    recall_at_k,
    recall_curve,
)


def test_ranks_on_a_hand_made_ranking():
    scores = np.array([
        [0.9, 0.1, 0.5, 0.3],  # positive 0 ranks 1st
        [0.9, 0.1, 0.5, 0.3],  # positive 2 ranks 2nd
        [0.9, 0.1, 0.5, 0.3],  # positive 1 ranks last
        [0.2, 0.2, 0.2, 0.2],  # all tied: ties count against the model -> last
    ])
    ranks = ranks_of_positives(scores, [[0], [2], [1], [3]])
    assert ranks.tolist() == [1, 2, 4, 4]
    assert recall_at_k(ranks, (1, 2, 3)) == {1: 25.0, 2: 50.0, 3: 50.0}
    assert recall_curve(ranks, 4).tolist() == [25.0, 50.0, 50.0, 100.0]


def test_several_positives_take_the_best_and_ignore_each_other():
    scores = np.array([[0.1, 0.8, 0.7, 0.9]])
    # Positives 1 and 2: the best positive (0.8) is beaten only by index 3, and positive 2 doesn't count.
    assert ranks_of_positives(scores, [[1, 2]]).tolist() == [2]


def test_no_query_is_dropped_silently():
    with pytest.raises(ValueError, match="query 1 has no positive"):
        ranks_of_positives(np.zeros((2, 3)), [[0], []])
    with pytest.raises(ValueError, match="outside the gallery"):
        ranks_of_positives(np.zeros((1, 3)), [[3]])


def test_full_gallery_perfect_and_reversed():
    sim = np.eye(5)
    result = cmr_full_gallery(sim, text_to_image=np.arange(5))
    assert result.image_to_text == {1: 100.0, 5: 100.0, 10: 100.0}
    assert result.mean_recall == 100.0
    worst = cmr_full_gallery(-np.eye(5), text_to_image=np.arange(5), ks=(1, 4, 5))
    assert worst.text_to_image == {1: 0.0, 4: 0.0, 5: 100.0}


def test_full_gallery_with_two_captions_per_image():
    # image 0 has texts 0,1; image 1 has texts 2,3.
    sim = np.array([[0.1, 0.9, 0.5, 0.2],
                    [0.3, 0.4, 0.2, 0.35]])
    result = cmr_full_gallery(sim, text_to_image=[0, 0, 1, 1], ks=(1, 2))
    # image 0: best positive text 1 ranks 1st; image 1: best positive text 3 (0.35) is beaten by text 1 (0.4).
    assert result.image_to_text == {1: 50.0, 2: 100.0}
    # text->image: text 0: image 1 (0.3) beats image 0 (0.1) -> rank 2; text 1 -> 1; text 2: image 0 (0.5)
    # beats image 1 (0.2) -> 2; text 3 -> 1.
    assert result.text_to_image == {1: 50.0, 2: 100.0}


def test_random_candidates_are_same_category_and_seeded():
    cats = ["dress"] * 150 + ["shirt"] * 120
    a = random_candidates(cats, 100, seed=3)
    b = random_candidates(cats, 100, seed=3)
    c = random_candidates(cats, 100, seed=4)
    assert (a == b).all() and not (a == c).all()
    assert (a[:, 0] == np.arange(270)).all()
    cats_arr = np.asarray(cats)
    assert (cats_arr[a] == cats_arr[:, None]).all()
    assert all(len(set(row)) == 100 for row in a)


def test_random_100_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    n = 130
    cats = ["a"] * 70 + ["b"] * 60  # "b" has < 100 items: negatives spill into "a"
    sim = rng.normal(size=(n, n)) + 2.0 * np.eye(n)
    result = cmr_random_100(sim, cats, ks=(1, 5, 10), seed=7)
    cands = random_candidates(cats, 100, seed=7)
    i2t_hits, t2i_hits = {1: 0, 5: 0, 10: 0}, {1: 0, 5: 0, 10: 0}
    for i in range(n):
        row_i2t = [sim[i, j] for j in cands[i]]
        row_t2i = [sim[j, i] for j in cands[i]]
        r1 = sorted(row_i2t, reverse=True).index(sim[i, i]) + 1
        r2 = sorted(row_t2i, reverse=True).index(sim[i, i]) + 1
        for k in i2t_hits:
            i2t_hits[k] += r1 <= k
            t2i_hits[k] += r2 <= k
    assert result.image_to_text == pytest.approx({k: 100 * v / n for k, v in i2t_hits.items()})
    assert result.text_to_image == pytest.approx({k: 100 * v / n for k, v in t2i_hits.items()})
    assert result.seed == 7
    # "b" (60 items) takes 40 negatives from "a", "a" (70 items) 30 from "b": the name says so.
    assert result.draw.other_category_negatives == 60 * 40 + 70 * 30
    assert result.protocol == ("random-100, same-category topped up from other categories "
                               "(4500 of 12870 negatives, 35.0%, for 130 of 130 queries)")


def test_random_100_is_called_same_category_only_when_every_negative_is():
    rng = np.random.default_rng(1)
    cats = ["a"] * 120 + ["b"] * 110
    result = cmr_random_100(rng.normal(size=(230, 230)), cats, seed=0)
    assert result.protocol == "random-100 same-category" and result.draw.other_category_negatives == 0


def test_random_100_never_draws_the_same_product_as_a_negative():
    cats = ["a"] * 150
    products = [f"p{k // 3}" for k in range(150)]  # 3 images per product
    draw = draw_random_candidates(cats, 100, seed=2, products=products)
    prod = np.asarray(products)
    assert (prod[draw.indices[:, 1:]] != prod[:, None]).all()
    assert len({tuple(r) for r in draw.indices}) == 150


def test_full_gallery_counts_the_same_product_as_positive():
    # Images 0 and 1 are one product; text 0 scores image 1 highest: a hit only with products given.
    sim = np.array([[0.1, 0.9, 0.0],
                    [0.8, 0.2, 0.0],
                    [0.0, 0.0, 1.0]])
    plain = cmr_full_gallery(sim, [0, 1, 2], ks=(1,))
    by_product = cmr_full_gallery(sim, [0, 1, 2], ks=(1,), products=["p", "p", "q"])
    assert plain.text_to_image[1] == pytest.approx(100 / 3) and plain.image_to_text[1] == pytest.approx(100 / 3)
    assert by_product.text_to_image[1] == 100.0 and by_product.image_to_text[1] == 100.0


def test_cir_fashioniq_averages():
    scores = {"dress": np.array([[0.9, 0.1], [0.9, 0.1]]), "shirt": np.array([[0.0, 1.0]])}
    targets = {"dress": [0, 1], "shirt": [1]}
    result = cir_fashioniq(scores, targets, ks=(1, 2))
    assert result.per_category == {"dress": {1: 50.0, 2: 100.0}, "shirt": {1: 100.0, 2: 100.0}}
    assert result.average == {1: 75.0, 2: 100.0}
    assert result.n_queries == {"dress": 2, "shirt": 1}
    # Without R@10 and R@50 there is no (R@10+R@50)/2 row; with them there is.
    assert [m for m, _ in result.rows()] == ["dress_R@1", "dress_R@2", "shirt_R@1", "shirt_R@2", "avg_R@1", "avg_R@2"]
    assert dict(cir_fashioniq(scores, targets, ks=(1, 10, 50)).rows())["avg_(R@10+R@50)/2"] == 100.0


def _numpy_fid(a, b):
    # Reference: the same formula through an eigen-decomposition instead of scipy's sqrtm.
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_fid_identical_sets_is_zero_and_matches_numpy_reference():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 16))
    b = rng.normal(loc=0.3, scale=1.2, size=(300, 16))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid(a, b) == pytest.approx(_numpy_fid(a, b), rel=1e-6)
    # Two Gaussians with known moments: FID -> ||mu||^2 + d (1 - 1.2)^2 for large n.
    big_a = rng.normal(size=(20000, 4))
    big_b = rng.normal(loc=0.5, scale=1.2, size=(20000, 4))
    assert fid(big_a, big_b) == pytest.approx(4 * 0.25 + 4 * 0.04, abs=0.05)


def test_kid_near_zero_for_same_distribution_and_positive_otherwise():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    c = rng.normal(loc=1.0, size=(300, 8))
    same, _ = kid(a, b, n_subsets=20, subset_size=200)
    diff, _ = kid(a, c, n_subsets=20, subset_size=200)
    assert abs(same) < 0.05 and diff > 0.5


@requires("java")
def test_caption_metrics_on_known_pairs():
    refs = {"1": ["a red striped dress"], "2": ["a blue shirt with long sleeves"]}
    perfect = caption_metrics(refs, {"1": "a red striped dress", "2": "a blue shirt with long sleeves"},
                              meteor=False)
    assert perfect["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["ROUGE-L"] == pytest.approx(1.0)
    partial = caption_metrics(refs, {"1": "a red striped dress", "2": "a blue shirt with short sleeves"})
    # BLEU-1: 9 of 10 unigrams match, equal lengths -> 0.9 exactly.
    assert partial["BLEU-1"] == pytest.approx(0.9, abs=1e-6)
    # ROUGE-L (beta 1.2) for pair 2: LCS 5 of 6 -> 5/6; pair 1 is 1.0; mean 0.91666...
    assert partial["ROUGE-L"] == pytest.approx((1 + 5 / 6) / 2, abs=1e-6)
    assert 0 < partial["METEOR"] < 1 and partial["CIDEr"] > 0
    assert partial["BLEU-4"] < perfect["BLEU-4"]
    with pytest.raises(ValueError, match="same ids"):
        caption_metrics(refs, {"1": "x"})


def test_detailed_captions_read_back_to_attributes_against_the_items():
    from unifashion.data.synthetic.captions import detailed_caption
    from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
    from unifashion.evaluation.captioning import caption_attribute_accuracy

    items = make_catalogue(CatalogueConfig(n_items=40)).items[:4]
    truth = [it.attributes for it in items]
    captions = [detailed_caption(a, seed=k) for k, a in enumerate(truth)]
    assert caption_attribute_accuracy(captions, truth)["colour accuracy"] == 100.0
    # One caption with another colour, one that does not parse: 2 of 4 colours right.
    other = next(c for c in ("red", "green") if c != truth[0]["colour"])
    wrong = dict(truth[0], colour=other)
    captions = [detailed_caption(wrong, seed=0), "a lovely garment", *captions[2:]]
    result = caption_attribute_accuracy(captions, truth)
    assert result["colour accuracy"] == 50.0 and result["parsed"] == 75.0
    assert result["category accuracy"] == 75.0
    with pytest.raises(ValueError, match="captions for"):
        caption_attribute_accuracy(captions[:2], truth)
