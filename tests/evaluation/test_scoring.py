"""Tiled scoring gives exactly the numbers of the whole matrix, for CMR (both protocols) and CIR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unifashion.evaluation.retrieval import (
    cmr_full_gallery,
    cmr_random_100,
    draw_random_candidates,
    ranks_of_positives,
)
from unifashion.evaluation.scoring import (
    MatrixScorer,
    MaxSimScorer,
    cmr_full_gallery_tiled,
    cmr_random_tiled,
    tensor_rows,
)
from unifashion.objectives.losses import max_query_similarity


def _embeddings(n_images=53, n_texts=53, q=4, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n_images, q, d, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(n_texts, d, generator=g), dim=-1)
    # Make the task non-trivial: text k is close to one of image k's queries.
    m = min(n_images, n_texts)
    t[:m] = torch.nn.functional.normalize(t[:m] + 1.5 * z[:m, 0], dim=-1)
    return z, t


def test_tiles_equal_the_whole_matrix_and_full_gallery_ranks_match():
    z, t = _embeddings()
    whole = max_query_similarity(z, t).numpy()  # images x texts, as UniFashion.score computes it (transposed)
    scorer = MaxSimScorer(tensor_rows(z), len(z), t)
    np.testing.assert_allclose(scorer.full(tile=7), whole, rtol=0, atol=1e-6)
    expected = cmr_full_gallery(whole, np.arange(len(t)))
    for tile in (5, 16, 1024):  # tiles smaller than, not dividing, and larger than the gallery
        result, t2i = cmr_full_gallery_tiled(scorer, tile=tile)
        assert result.image_to_text == expected.image_to_text and result.text_to_image == expected.text_to_image
        assert np.array_equal(t2i, ranks_of_positives(whole.T, [[i] for i in range(len(t))]))


def test_ties_count_against_the_model_as_in_the_whole_matrix():
    scores = np.ones((12, 12))
    scores[np.arange(12), np.arange(12)] = 2.0
    scores[3, 5] = 2.0  # image 3's text 5 ties with image 5's own text
    expected = cmr_full_gallery(scores, np.arange(12), ks=(1,))
    result, _ = cmr_full_gallery_tiled(MatrixScorer(scores), ks=(1,), tile=4)
    assert result.image_to_text == expected.image_to_text and result.text_to_image == expected.text_to_image
    assert result.text_to_image[1] < 100.0


@pytest.mark.parametrize("chunk", [4096, 7, 1])
def test_random_100_from_pairs_equals_the_matrix_protocol(chunk):
    z, t = _embeddings(n_images=60, n_texts=60)
    whole = max_query_similarity(z, t).numpy()
    categories = [["a", "b", "c"][i % 3] for i in range(60)]
    expected = cmr_random_100(whole, categories, seed=3, n_candidates=10)
    got = cmr_random_tiled(MaxSimScorer(tensor_rows(z), len(z), t), categories, seed=3, n_candidates=10,
                           chunk=chunk)
    assert got.image_to_text == expected.image_to_text and got.text_to_image == expected.text_to_image
    # the same protocol on candidates drawn by the caller
    drawn = draw_random_candidates(categories, 10, seed=3).indices
    again = cmr_random_tiled(MatrixScorer(whole), categories, n_candidates=10, candidates=drawn, chunk=chunk)
    assert again.image_to_text == expected.image_to_text and again.text_to_image == expected.text_to_image


def test_caption_fusion_adds_the_caption_term():
    z, t = _embeddings(n_images=20, n_texts=9)
    captions = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    whole = (max_query_similarity(z, t) + captions @ t.t()).numpy()
    scorer = MaxSimScorer(tensor_rows(z), len(z), t, captions)
    np.testing.assert_allclose(scorer.full(tile=6), whole, atol=1e-6)
    images, texts = np.array([0, 19, 4, 4]), np.array([8, 0, 3, 4])
    np.testing.assert_allclose(scorer.pairs(images, texts, chunk=3), whole[images, texts], atol=1e-6)
