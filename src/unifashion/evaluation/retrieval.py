"""Retrieval metrics and the paper's protocols for CMR and CIR.

Scores are (queries x gallery) matrices, higher is better. A query's rank is the number of gallery
entries that score *at least as high* as its best positive, other than that positive (ties count
against the model, so a constant scorer gets no free hits), plus one.

- CMR, full gallery: every query ranks its positive(s) among the whole gallery.
- CMR, random-100 (the FashionGen protocol the paper follows): every query ranks its positive
  among 100 candidates, the positive and 99 negatives drawn from the positive's category with a
  fixed, recorded seed. Where a category is too small the negatives are topped up from other
  categories, and the protocol's name says so with the count. Several images of one product
  (FashionGen): either de-duplicate by product first, or never use the product's other images as
  negatives (random-100) and count them as positives (full gallery); the runner records which.
- CIR, Fashion-IQ: per category, R@10 and R@50 over that category's gallery; the averages over
  categories; and (R@10 + R@50) / 2. Every query is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def ranks_of_positives(scores: np.ndarray, positives: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """The 1-based rank of each query's best-ranked positive.

    ``positives[i]`` is the gallery index (or indices) of query i's positive(s). A query without
    any positive is an error, not a skip: protocols here never drop queries.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (queries, gallery) matrix, got shape {scores.shape}")
    if len(positives) != scores.shape[0]:
        raise ValueError(f"{len(positives)} positive lists for {scores.shape[0]} queries")
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    for i, pos in enumerate(positives):
        pos = np.atleast_1d(np.asarray(pos, dtype=np.int64))
        if pos.size == 0:
            raise ValueError(f"query {i} has no positive in the gallery")
        if pos.min() < 0 or pos.max() >= scores.shape[1]:
            raise ValueError(f"query {i} has a positive index outside the gallery of {scores.shape[1]}")
        row = scores[i]
        best = pos[np.argmax(row[pos])]
        not_positive = np.ones(row.shape[0], dtype=bool)
        not_positive[pos] = False
        ranks[i] = 1 + int(np.count_nonzero(row[not_positive] >= row[best]))
    return ranks


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Percentage of queries whose positive ranks within the top k."""
    ranks = np.asarray(ranks)
    return {k: float(100.0 * np.mean(ranks <= k)) for k in ks}


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """Recall@k for k = 1..max_k, for plotting."""
    ranks = np.asarray(ranks)
    return np.array([100.0 * np.mean(ranks <= k) for k in range(1, max_k + 1)])


@dataclass
class CMRResult:
    """Recall@K in both directions and their mean, with the protocol that produced them."""

    protocol: str
    image_to_text: dict[int, float]
    text_to_image: dict[int, float]
    seed: int | None = None
    draw: CandidateDraw | None = None  # random-N: the candidates and how many came from other categories

    @property
    def mean_recall(self) -> float:
        values = list(self.image_to_text.values()) + list(self.text_to_image.values())
        return float(np.mean(values))

    def rows(self) -> list[tuple[str, float]]:
        out = [(f"i2t_R@{k}", v) for k, v in self.image_to_text.items()]
        out += [(f"t2i_R@{k}", v) for k, v in self.text_to_image.items()]
        out.append(("mean_R", self.mean_recall))
        return out


def cmr_full_gallery(similarity: np.ndarray, text_to_image: Sequence[int],
                     ks: Sequence[int] = (1, 5, 10), products: Sequence[str] | None = None) -> CMRResult:
    """CMR over the whole gallery. ``similarity`` is (images x texts); text j describes image
    ``text_to_image[j]``; an image's positives are all of its texts. With ``products`` (one id per
    image) every text of an image of the same product is a positive too, and every image of the
    text's product is a positive of the text (FashionGen: several photos of one product)."""
    similarity = np.asarray(similarity)
    text_to_image = np.asarray(text_to_image)
    if products is None:
        image_texts = [np.flatnonzero(text_to_image == i) for i in range(similarity.shape[0])]
        text_images = [[i] for i in text_to_image]
    else:
        products = np.asarray(products)
        if len(products) != similarity.shape[0]:
            raise ValueError(f"{len(products)} product ids for {similarity.shape[0]} images")
        text_products = products[text_to_image]
        image_texts = [np.flatnonzero(text_products == products[i]) for i in range(similarity.shape[0])]
        text_images = [np.flatnonzero(products == p) for p in text_products]
    i2t = ranks_of_positives(similarity, image_texts)
    t2i = ranks_of_positives(similarity.T, text_images)
    return CMRResult("full-gallery", recall_at_k(i2t, ks), recall_at_k(t2i, ks))


@dataclass
class CandidateDraw:
    """The random-N candidates of every query, and how many negatives had to come from another
    category because the query's own category was too small."""

    indices: np.ndarray  # (queries, n_candidates): the query's own index first, then its negatives
    other_category_negatives: int  # negatives drawn from other categories, over all queries
    topped_up_queries: int  # queries whose category could not supply n_candidates - 1 negatives

    @property
    def total_negatives(self) -> int:
        return int(self.indices.shape[0] * (self.indices.shape[1] - 1))

    def label(self, n_candidates: int) -> str:
        """The protocol's honest name: "same-category" only when every negative is."""
        if self.other_category_negatives == 0:
            return f"random-{n_candidates} same-category"
        share = 100.0 * self.other_category_negatives / self.total_negatives
        return (f"random-{n_candidates}, same-category topped up from other categories "
                f"({self.other_category_negatives} of {self.total_negatives} negatives, {share:.1f}%, "
                f"for {self.topped_up_queries} of {self.indices.shape[0]} queries)")


def draw_random_candidates(categories: Sequence[str], n_candidates: int = 100, seed: int = 0,
                           products: Sequence[str] | None = None) -> CandidateDraw:
    """For each item, ``n_candidates`` gallery indices: itself first, then negatives of its category.

    Negatives come from the same category (the paper's protocol); where a category has too few
    items, the rest are drawn from other categories so every query still ranks among exactly
    ``n_candidates``, and the draw counts them (:meth:`CandidateDraw.label` names the protocol).
    With ``products``, items of the query's own product are never negatives. The draw depends only
    on ``seed``, the category list and the product list.
    """
    categories = np.asarray(categories)
    n = len(categories)
    products = np.arange(n) if products is None else np.asarray(products)
    if len(products) != n:
        raise ValueError(f"{len(products)} product ids for {n} items")
    rng = np.random.default_rng(seed)
    by_cat = {c: np.flatnonzero(categories == c) for c in np.unique(categories)}
    # int32: an index array of N x 100 at FashionGen's size is half that in int64
    out = np.empty((n, n_candidates), dtype=np.int32 if n < 2**31 else np.int64)
    other_negatives = topped_up = 0
    for i in range(n):
        same = by_cat[categories[i]]
        same = same[products[same] != products[i]]
        if len(same) >= n_candidates - 1:
            neg = rng.choice(same, size=n_candidates - 1, replace=False)
        else:
            others = np.flatnonzero((categories != categories[i]) & (products != products[i]))
            if len(same) + len(others) < n_candidates - 1:
                raise ValueError(f"random-{n_candidates} protocol: item {i} has only {len(same) + len(others)} "
                                 f"possible negatives (other products), needs {n_candidates - 1}")
            neg = np.concatenate([same, rng.choice(others, size=n_candidates - 1 - len(same), replace=False)])
            other_negatives += n_candidates - 1 - len(same)
            topped_up += 1
        out[i, 0] = i
        out[i, 1:] = neg
    return CandidateDraw(out, other_negatives, topped_up)


def random_candidates(categories: Sequence[str], n_candidates: int = 100, seed: int = 0) -> np.ndarray:
    """The candidate indices of :func:`draw_random_candidates` (one image per product)."""
    n = len(categories)
    if n < n_candidates:
        raise ValueError(f"random-{n_candidates} protocol needs at least {n_candidates} items, got {n}")
    return draw_random_candidates(categories, n_candidates, seed).indices


def cmr_random_100(similarity: np.ndarray, categories: Sequence[str], ks: Sequence[int] = (1, 5, 10),
                   seed: int = 0, n_candidates: int = 100, products: Sequence[str] | None = None) -> CMRResult:
    """CMR under the random-100 protocol, for one caption per image (``similarity`` is square:
    image i's caption is text i). Image-to-text ranks the caption among 100 captions, text-to-image
    the image among 100 images, the same candidate indices both ways. ``result.protocol`` names
    the draw honestly (see :meth:`CandidateDraw.label`); with ``products``, other images of the
    query's product are never among its negatives."""
    similarity = np.asarray(similarity)
    if similarity.shape[0] != similarity.shape[1]:
        raise ValueError("the random-100 protocol takes one caption per image: a square similarity matrix")
    if len(categories) < n_candidates:
        raise ValueError(f"random-{n_candidates} protocol needs at least {n_candidates} items, got {len(categories)}")
    draw = draw_random_candidates(categories, n_candidates, seed, products)
    cands = draw.indices
    rows = np.arange(len(cands))[:, None]
    i2t_scores = similarity[rows, cands]  # image i against the captions of its candidates
    t2i_scores = similarity.T[rows, cands]  # caption i against the images of its candidates
    positives = [[0]] * len(cands)
    i2t = ranks_of_positives(i2t_scores, positives)
    t2i = ranks_of_positives(t2i_scores, positives)
    return CMRResult(draw.label(n_candidates), recall_at_k(i2t, ks), recall_at_k(t2i, ks), seed=seed, draw=draw)


@dataclass
class CIRResult:
    """The Fashion-IQ protocol's numbers: per category and averaged."""

    per_category: dict[str, dict[int, float]]
    n_queries: dict[str, int]

    @property
    def average(self) -> dict[int, float]:
        ks = next(iter(self.per_category.values())).keys()
        return {k: float(np.mean([r[k] for r in self.per_category.values()])) for k in ks}

    @property
    def mean_r10_r50(self) -> float:
        avg = self.average
        return float((avg[10] + avg[50]) / 2)

    def rows(self) -> list[tuple[str, float]]:
        out = []
        for cat, rec in self.per_category.items():
            out += [(f"{cat}_R@{k}", v) for k, v in rec.items()]
        out += [(f"avg_R@{k}", v) for k, v in self.average.items()]
        if {10, 50} <= set(self.average):
            out.append(("avg_(R@10+R@50)/2", self.mean_r10_r50))
        return out


def cir_fashioniq(scores_by_category: dict[str, np.ndarray], targets_by_category: dict[str, Sequence[int]],
                  ks: Sequence[int] = (10, 50)) -> CIRResult:
    """The Fashion-IQ protocol: R@K per category over that category's gallery, then averages.

    ``scores_by_category[c]`` is (queries x gallery of c); ``targets_by_category[c][i]`` is query i's
    target index in that gallery. As in the standard protocol, the reference image stays in the
    gallery and no query is dropped.
    """
    per_category, counts = {}, {}
    for cat, scores in scores_by_category.items():
        targets = targets_by_category[cat]
        ranks = ranks_of_positives(scores, [[t] for t in targets])
        per_category[cat] = recall_at_k(ranks, ks)
        counts[cat] = len(targets)
    if not per_category:
        raise ValueError("no CIR queries to evaluate")
    return CIRResult(per_category, counts)
