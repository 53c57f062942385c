"""The pieces behind the catalogue index: ``ItemRow``'s named fields against the ``items``
table, and the one caption-fusion score function that every search path reports."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from unifashion.index import CatalogueIndex, ItemMetadata
from unifashion.index.kernels import fused_score
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
def test_every_search_path_reports_the_fused_score(tmp_path, exact):
    ids, multi, fusion = items(40)
    index = CatalogueIndex.create(tmp_path / "index", dim=DIM, num_queries=NUM_QUERIES)
    index.add(ids, multi, fusion)
    queries = unit(multi[[1, 5, 9], 0] + 0.2)
    for weight in (0.0, 0.5, 1.0):
        batched = index.search(queries, top_k=6, fusion_weight=weight, exact=exact)
        singles = [index.search(q, top_k=6, fusion_weight=weight, exact=exact) for q in queries]
        for hits in (*batched, *singles):
            for hit in hits:
                expected = fused_score(np.float32(hit.maxsim), np.float32(hit.fusion), weight)
                assert hit.score == pytest.approx(float(expected), abs=1e-6)
        assert [[h.item_id for h in hits] for hits in batched] == [[h.item_id for h in hits] for hits in singles]
