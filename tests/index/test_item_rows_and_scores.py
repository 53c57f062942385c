"""The pieces behind the catalogue index: ``ItemRow``'s named fields against the ``items``
table, and the scores every search path reports against max-sim computed here."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from unifashion.index import CatalogueIndex, ItemMetadata
from unifashion.index.store import DATABASE_NAME, ItemRow
from unifashion.index.validation import item_row

DIM = 16
NUM_QUERIES = 4


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def items(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    multi = unit(rng.standard_normal((n, NUM_QUERIES, DIM)))
    fusion = unit(rng.standard_normal((n, DIM)))
    return [f"item-{i}" for i in range(n)], multi, fusion


def test_item_row_fields_are_the_items_table_columns(tmp_path):
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES)
    index.close()
    with sqlite3.connect(tmp_path / "index" / DATABASE_NAME) as conn:
        columns = [info[1] for info in conn.execute("PRAGMA table_info(items)")]
    assert list(ItemRow._fields) == columns


def test_item_row_round_trips_through_the_index_by_name(tmp_path):
    meta = {
        "category": "dress",
        "captions": {"short": "a red dress"},
        "attributes": {"colour": "red"},
        "image_path": "images/a.png",
    }
    row = item_row(7, "item-a", 3, 5, meta, "generated caption")
    assert isinstance(row, ItemRow)
    assert (row.key, row.item_id, row.segment, row.row) == (7, "item-a", 3, 5)
    assert (row.category, row.image_path, row.fusion_caption) == ("dress", "images/a.png", "generated caption")
    assert json.loads(row.captions) == {"short": "a red dress"} and json.loads(row.attributes) == {"colour": "red"}
    assert ItemRow(**row._asdict()) == row

    ids, multi, fusion = items(3)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES)
    index.add(ids, multi, fusion, [meta, None, None], fusion_captions=["generated caption", "", ""])
    index.close()
    with sqlite3.connect(tmp_path / "index" / DATABASE_NAME) as conn:
        stored = [ItemRow(*values) for values in conn.execute("SELECT * FROM items ORDER BY key")]
    assert [r.item_id for r in stored] == ids
    assert [r.row for r in stored] == [0, 1, 2] and len({r.segment for r in stored}) == 1
    first = stored[0]
    assert first._replace(key=7, item_id="item-a", segment=3, row=5) == row
    reopened = CatalogueIndex.open(tmp_path / "index", read_only=True)
    assert reopened.get("item-0") == ItemMetadata(
        "item-0", "dress", {"short": "a red dress"}, {"colour": "red"}, "images/a.png", "generated caption"
    )


@pytest.mark.parametrize("exact", [True, False])
def test_every_search_path_reports_exact_max_sim_and_fusion_scores(tmp_path, exact):
    """Each hit's maxsim, fusion and score, one query or a batch, exact scan or ANN re-rank,
    against max-sim and the caption term computed here in float64 from the stored vectors."""
    ids, multi, fusion = items(40)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES)
    index.add(ids, multi, fusion)
    stored = {item_id: index.vectors(item_id) for item_id in ids}  # the fp16-rounded vectors
    queries = unit(multi[[1, 5, 9], 0] + 0.2)
    queries[2] *= 2.5  # an unnormalised query: scores are plain inner products
    for weight in (0.0, 0.5, 1.0):
        batched = index.search(queries, top_k=6, fusion_weight=weight, exact=exact)
        singles = [index.search(q, top_k=6, fusion_weight=weight, exact=exact) for q in queries]
        for hits_of_query in (batched, singles):
            for query, hits in zip(queries.astype(np.float64), hits_of_query, strict=True):
                all_scores = {}
                for item_id, (item_multi, item_fusion) in stored.items():
                    maxsim = float(np.max(item_multi.astype(np.float64) @ query))
                    caption = float(item_fusion.astype(np.float64) @ query)
                    all_scores[item_id] = (maxsim, caption, maxsim + weight * caption)
                best = sorted(all_scores, key=lambda i: -all_scores[i][2])[:6]
                assert [h.item_id for h in hits] == best
                for hit in hits:
                    maxsim, caption, score = all_scores[hit.item_id]
                    assert hit.maxsim == pytest.approx(maxsim, abs=1e-5)
                    assert hit.fusion == pytest.approx(caption if weight else 0.0, abs=1e-5)
                    assert hit.score == pytest.approx(score, abs=1e-5)
        assert [[h.item_id for h in hits] for hits in batched] == [[h.item_id for h in hits] for hits in singles]
