"""The vector-level candidate stage (vector_ann.py) and the image -> texts index (text_ann.py):
exactness of grouping exact vector hits by item, the trained IVF path, incremental adds without
re-training, deletes, the fused index, and files on disk."""

from __future__ import annotations

import numpy as np
import pytest
from test_index import DIM, NUM_QUERIES, brute_force, hit_ids, make_items, queries_near, unit

from unifashion.index import CatalogueIndex
from unifashion.index.text_ann import TextIndex, rank_exact
from unifashion.index.vector_ann import VECTORS, VECTORS_FLAT, first_keys


def test_first_keys_keeps_first_appearances_in_order():
    ids = np.array([5, 3, 5, -1, 7, 3, 2, 7])
    assert first_keys(ids, 10).tolist() == [5, 3, 7, 2]
    assert first_keys(ids, 2).tolist() == [5, 3]


@pytest.mark.parametrize("fusion_weight", [0.0, 1.0])
def test_grouped_exact_vector_hits_are_the_exact_top_items(tmp_path, fusion_weight):
    """Before training the stage is flat (exact) over all vectors: with candidates = top_k the
    grouped hits already are the exact max-sim (+ fusion at the fused weight) top items."""
    ids, multi, fusion, meta = make_items(300)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES)
    index.add(ids, multi, fusion, meta)
    assert index.ann_kind == VECTORS_FLAT
    for query in queries_near(multi, 6):
        hits = index.search(query, top_k=5, candidates=5, fusion_weight=fusion_weight)
        expected_ids, expected_scores = brute_force(ids, multi, fusion, query, 5, fusion_weight)
        assert hit_ids(hits) == expected_ids
        np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=1e-4)


def test_trained_index_adds_without_retraining_and_deletes_every_vector(tmp_path):
    ids, multi, fusion, meta = make_items(700)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES, nlist=4, nprobe=4, pq_m=8)
    index.add(ids[:10], multi[:10], fusion[:10], meta[:10])
    assert index.ann_kind == VECTORS_FLAT  # 10 items x 8 vectors < 39 x 4 lists
    index.add(ids[10:600], multi[10:600], fusion[10:600], meta[10:600])
    assert index.ann_kind == VECTORS
    ann = index._snapshot.ann
    centroids = ann.plain.quantizer.reconstruct_n(0, 4).copy()
    assert ann.plain.ntotal == ann.fused.ntotal == 600 * NUM_QUERIES
    index.add(ids[600:], multi[600:], fusion[600:], meta[600:])
    ann = index._snapshot.ann
    np.testing.assert_array_equal(ann.plain.quantizer.reconstruct_n(0, 4), centroids)  # not re-trained
    assert ann.plain.ntotal == 700 * NUM_QUERIES
    index.delete(ids[:50])
    assert index._snapshot.ann.plain.ntotal == index._snapshot.ann.fused.ntotal == 650 * NUM_QUERIES
    # nprobe = nlist and candidates covering the catalogue: the re-rank sees every item.
    queries = queries_near(multi, 6)
    for weight in (0.0, 1.0, 0.5):
        ann_hits = index.search(queries, top_k=10, candidates=650, fusion_weight=weight)
        exact = index.search(queries, top_k=10, exact=True, fusion_weight=weight)
        assert [hit_ids(a) for a in ann_hits] == [hit_ids(e) for e in exact]
    # Deleted items are gone from the candidate stage, not only filtered after it.
    found = index.search(queries, top_k=10, candidates=650)
    assert all(int(h.item_id.removeprefix("item-")) >= 50 for row in found for h in row)


def test_reopened_trained_index_gives_identical_results(tmp_path):
    ids, multi, fusion, meta = make_items(400)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES, nlist=4, pq_m=8,
                                  fused_weight=0.5)
    index.add(ids, multi, fusion, meta)
    queries = queries_near(multi, 4)
    expected = [[(h.item_id, h.score) for h in row] for row in index.search(queries, top_k=5, fusion_weight=0.5)]
    assert sorted(p.name for p in (tmp_path / "index" / "ann").iterdir()) == [
        "ann-g000001.empty.faiss", "ann-g000001.faiss", "ann-g000001.fused.empty.faiss", "ann-g000001.fused.faiss"]
    index.close()
    with CatalogueIndex.open(tmp_path / "index", read_only=True) as reader:
        assert reader.ann_kind == VECTORS
        assert reader._snapshot.ann.fused_weight == 0.5
        got = [[(h.item_id, h.score) for h in row] for row in reader.search(queries, top_k=5, fusion_weight=0.5)]
    assert got == expected


def test_no_fused_index_when_the_fused_weight_is_zero(tmp_path):
    ids, multi, fusion, meta = make_items(50)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES, fused_weight=0.0)
    index.add(ids, multi, fusion, meta)
    assert sorted(p.name for p in (tmp_path / "index" / "ann").iterdir()) == ["ann-g000001.empty.faiss",
                                                                              "ann-g000001.faiss"]
    query = queries_near(multi, 1)[0]
    assert hit_ids(index.search(query, top_k=5, candidates=50, fusion_weight=1.0)) == hit_ids(
        index.search(query, top_k=5, exact=True, fusion_weight=1.0))
    with pytest.raises(ValueError, match="fused_weight must be a finite number"):
        CatalogueIndex.create(tmp_path / "other", fused_weight=float("nan"))


def test_rebuild_retrains_with_new_settings_and_commits_them(tmp_path):
    ids, multi, fusion, meta = make_items(200)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES, nlist=64)
    index.add(ids, multi, fusion, meta)
    assert index.ann_kind == VECTORS_FLAT  # 200 x 8 vectors < 39 x 64 lists
    generation = index.rebuild_ann(nlist=4, pq_m=8)
    assert generation == index.generation == 2
    assert index.ann_kind == VECTORS and index.stats()["ann_config"]["nlist"] == 4
    query = queries_near(multi, 1)[0]
    assert hit_ids(index.search(query, top_k=5, candidates=200)) == hit_ids(index.search(query, top_k=5, exact=True))
    index.close()
    with CatalogueIndex.open(tmp_path / "index", read_only=True) as reader:  # the settings were committed
        assert reader.ann_kind == VECTORS and reader.stats()["ann_config"]["nlist"] == 4
    with pytest.raises(ValueError, match="unknown ANN kind 'flat'; choose one of vectors"):
        CatalogueIndex.create(tmp_path / "other", ann="flat")


def test_text_index_matches_exhaustive_ranking(monkeypatch):
    from unifashion.index import text_ann

    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((20, DIM)))
    texts = unit(centres[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, DIM)))
    images = [unit(texts[i] + 0.2 * rng.standard_normal((NUM_QUERIES, DIM))) for i in rng.integers(0, 3000, 10)]
    small = TextIndex(texts)
    assert small.ann is None  # below BRUTE_FORCE_TEXTS: exhaustive
    monkeypatch.setattr(text_ann, "BRUTE_FORCE_TEXTS", 1000)
    # Every list searched and a deep pool per query vector: the exact re-rank decides.
    bank = TextIndex(texts, nlist=8, pq_m=8, nprobe=8, hits=1500)
    assert bank.ann is not None
    for z in images:
        rows, scores = bank.search(z, 10)
        expected_rows, expected_scores = rank_exact(texts, z, 10)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_allclose(scores, (texts[rows] @ z.T).max(axis=1), rtol=1e-6)
        reference = sorted(range(len(texts)), key=lambda t: -max(float(texts[t] @ q) for q in z))[:10]
        assert expected_rows.tolist() == reference
