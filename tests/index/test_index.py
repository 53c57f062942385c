"""Tests of the catalogue index: exact max-sim against a brute-force reference, the ANN stage,
caption fusion, add/delete/upsert, persistence across processes, crash safety, bad input.

Most tests use small vectors (8 queries of dim 32) so that the whole file runs in seconds; one
test uses the model's real shape (32 x 256). Tests of behaviour take the ``backend`` fixture
and run against the local index (None) and the Milvus backend (a :class:`MilvusBackend` on
milvus-lite, FLAT: exact grouping search), which is skipped where milvus-lite is not installed
(an optional extra: ``pip install 'unifashion[milvus]'``). The Milvus tests share one milvus-lite
database per session (starting one costs seconds), each test in collections of its own. (The
fixtures live here, not in a conftest.py: tests/conftest.py is imported as ``conftest``.)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import requires
from unifashion.data.records import ItemRecord
from unifashion.index import (
    CatalogueIndex,
    DuplicateItemError,
    IndexLockedError,
    ItemMetadata,
    MilvusBackend,
    UnknownItemError,
    create_index,
    open_index,
)
from unifashion.index import kernels as index_module

DIM = 32
NUM_QUERIES = 8
CATEGORIES = ("dress", "shirt", "toptee")
_collections = itertools.count()


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "tests.db")


@pytest.fixture(params=["faiss", pytest.param("milvus", marks=requires("milvus"))])
def backend(request) -> MilvusBackend | None:
    if request.param == "faiss":
        return None
    uri = request.getfixturevalue("milvus_uri")
    return MilvusBackend(uri=uri, collection=f"test_{next(_collections)}", index_type="FLAT")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_items(n: int, seed: int = 0, prefix: str = "item", dim: int = DIM, num_queries: int = NUM_QUERIES):
    """Clustered items (a few centres plus noise), so that the ANN stage has neighbourhoods."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((8, num_queries, dim)))
    assignment = rng.integers(0, len(centres), size=n)
    multi = unit(centres[assignment] + 0.6 * rng.standard_normal((n, num_queries, dim)))
    fusion = unit(multi.mean(axis=1) + 0.5 * rng.standard_normal((n, dim)))
    ids = [f"{prefix}-{i}" for i in range(n)]
    metadata = [
        {
            "category": CATEGORIES[i % len(CATEGORIES)],
            "captions": {"short": f"{prefix} number {i}"},
            "attributes": {"index": i},
            "image_path": f"images/{prefix}-{i}.png",
            "fusion_caption": f"generated caption of {prefix} {i}",
        }
        for i in range(n)
    ]
    return ids, multi, fusion, metadata


def queries_near(multi: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """Text-like queries: one of an item's vectors plus noise."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, len(multi), size=count)
    slots = rng.integers(0, multi.shape[1], size=count)
    return unit(multi[items, slots] + 0.3 * rng.standard_normal((count, multi.shape[2])))


def as_stored(values: np.ndarray) -> np.ndarray:
    """What the index keeps: fp16, values below fp16's smallest normal flushed to zero."""
    stored = values.astype(np.float16)
    stored[np.abs(stored) < np.float16(2.0**-14)] = 0
    return stored.astype(np.float64)


def brute_force(ids, multi, fusion, query, top_k, fusion_weight=0.0, allowed=None):
    """The reference: loop over items and their vectors, float64, on the stored values."""
    multi, fusion, query = as_stored(multi), as_stored(fusion), query.astype(np.float64)
    scored = []
    for i, item_id in enumerate(ids):
        if allowed is not None and not allowed(i):
            continue
        maxsim = max(float(np.dot(query, multi[i, j])) for j in range(multi.shape[1]))
        scored.append((maxsim + fusion_weight * float(np.dot(query, fusion[i])), item_id))
    scored.sort(key=lambda pair: -pair[0])
    return [item_id for _score, item_id in scored[:top_k]], [score for score, _id in scored[:top_k]]


def create(path: Path, backend: MilvusBackend | None = None, **create_args):
    """An empty index of the test shape: local (``backend`` None) or on Milvus."""
    options = {"dim": DIM, "num_queries": NUM_QUERIES, **create_args}
    return create_index(path, backend, **options)


def build(path: Path, n: int = 300, backend: MilvusBackend | None = None, **create_args) -> tuple:
    data = make_items(n)
    index = create(path, backend, **create_args)
    index.add(*data)
    return index, data


def hit_ids(hits) -> list[str]:
    return [h.item_id for h in hits]


# -- scoring -------------------------------------------------------------------------------


def test_fp16_conversion_is_exact_for_every_finite_value():
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    np.testing.assert_array_equal(index_module.fp16_to_f32(finite), finite.astype(np.float32))
    read_only = finite.reshape(2, -1)[:, ::2]  # strided and read-only, as a memory-mapped slice can be
    read_only.flags.writeable = False
    out = np.empty(read_only.shape, dtype=np.float32)
    assert index_module.fp16_to_f32(read_only, out) is out
    np.testing.assert_array_equal(out, read_only.astype(np.float32))


@pytest.mark.parametrize("fusion_weight", [0.0, 1.0])
def test_exact_search_matches_brute_force(tmp_path, fusion_weight, backend):
    index, (ids, multi, fusion, _meta) = build(tmp_path / "index", n=257, backend=backend)
    queries = queries_near(multi, 6)
    results = index.search(queries, top_k=7, exact=True, fusion_weight=fusion_weight)
    assert len(results) == 6
    for query, hits in zip(queries, results, strict=True):
        expected_ids, expected_scores = brute_force(ids, multi, fusion, query, 7, fusion_weight)
        assert hit_ids(hits) == expected_ids
        np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=1e-5)
        assert [h.rank for h in hits] == list(range(1, 8))
        for h in hits:
            assert h.score == pytest.approx(h.maxsim + fusion_weight * h.fusion, abs=1e-6)


def test_exact_search_at_the_model_shape_with_an_unnormalised_query(tmp_path, backend):
    ids, multi, fusion, meta = make_items(40, dim=256, num_queries=32)
    index = create(tmp_path / "index", backend, dim=256, num_queries=32)  # the model's shape
    index.add(ids, multi, fusion, meta)
    query = 3.0 * queries_near(multi, 1)[0]  # scores are plain inner products: scale carries through
    hits = index.search(query, top_k=5, exact=True, fusion_weight=1.0)
    expected_ids, expected_scores = brute_force(ids, multi, fusion, query, 5, 1.0)
    assert hit_ids(hits) == expected_ids
    np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=1e-4)


def test_ann_rerank_equals_exact_when_candidates_cover_the_catalogue(tmp_path, backend):
    index, (ids, multi, fusion, _meta) = build(tmp_path / "index", n=300, backend=backend)
    queries = queries_near(multi, 8)
    for fusion_weight in (0.0, 1.0):
        ann = index.search(queries, top_k=10, candidates=300, fusion_weight=fusion_weight)
        exact = index.search(queries, top_k=10, exact=True, fusion_weight=fusion_weight)
        for a, e in zip(ann, exact, strict=True):
            assert hit_ids(a) == hit_ids(e)
            np.testing.assert_allclose([h.score for h in a], [h.score for h in e], atol=1e-6)


def test_fusion_term_changes_the_ranking_as_expected(tmp_path, backend):
    rng = np.random.default_rng(3)
    query = unit(rng.standard_normal(DIM))
    other = unit(rng.standard_normal(DIM) - np.dot(rng.standard_normal(DIM), query) * query)
    other = unit(other - np.dot(other, query) * query)  # orthogonal to the query
    # "visual" matches the query better by max-sim, "described" by its caption embedding.
    visual = unit(np.tile(0.9 * query + 0.436 * other, (NUM_QUERIES, 1)))
    described = unit(np.tile(0.8 * query + 0.6 * other, (NUM_QUERIES, 1)))
    index = create(tmp_path / "index", backend)
    index.add(["visual", "described"], np.stack([visual, described]), np.stack([other, query]))
    plain = index.search(query, top_k=2)
    fused = index.search(query, top_k=2, fusion_weight=1.0)
    assert hit_ids(plain) == ["visual", "described"]
    assert hit_ids(fused) == ["described", "visual"]
    assert fused[0].fusion == pytest.approx(1.0, abs=1e-3)
    assert fused[1].fusion == pytest.approx(0.0, abs=1e-3)
    assert fused[0].score == pytest.approx(fused[0].maxsim + 1.0, abs=1e-3)


def test_category_filter(tmp_path, backend):
    index, (ids, multi, fusion, meta) = build(tmp_path / "index", n=120, backend=backend)
    query = queries_near(multi, 1)[0]
    in_shirts = [i for i, m in enumerate(meta) if m["category"] == "shirt"]
    expected, _ = brute_force(ids, multi, fusion, query, 5, allowed=lambda i: i in in_shirts)
    assert hit_ids(index.search(query, top_k=5, category="shirt", exact=True)) == expected
    assert hit_ids(index.search(query, top_k=5, category="shirt", candidates=len(in_shirts))) == expected
    assert all(h.metadata.category == "shirt" for h in index.search(query, top_k=5, category="shirt"))
    assert index.categories() == {"dress": 40, "shirt": 40, "toptee": 40}
    with pytest.raises(ValueError, match="unknown category 'coat'"):
        index.search(query, category="coat")


# -- changes -------------------------------------------------------------------------------


def test_add_delete_upsert_get(tmp_path, backend):
    index, (ids, multi, fusion, meta) = build(tmp_path / "index", n=30, backend=backend)
    assert len(index) == 30 and index.ids() == ids
    assert index.get("item-4") == ItemMetadata(
        "item-4", "shirt", {"short": "item number 4"}, {"index": 4}, "images/item-4.png", "generated caption of item 4"
    )

    with pytest.raises(DuplicateItemError, match="'item-3'.*use upsert"):
        index.add(["new-1", "item-3"], multi[:2], fusion[:2])
    assert len(index) == 30 and "new-1" not in index  # nothing was added

    index.delete(["item-0", "item-1"])
    assert len(index) == 28 and "item-0" not in index
    with pytest.raises(UnknownItemError, match="'item-0'"):
        index.delete(["item-2", "item-0"])
    assert "item-2" in index  # nothing was deleted
    with pytest.raises(UnknownItemError, match="'nope'"):
        index.get("nope")
    assert "item-0" not in hit_ids(index.search(multi[0, 0], top_k=28, exact=True))

    # upsert: item-5 takes the deleted item-1's vectors and new metadata; a new id is added.
    index.upsert(["item-5", "fresh"], multi[[1, 0]], fusion[[1, 0]], [{"category": "coat"}, None])
    assert len(index) == 29
    assert index.get("item-5").category == "coat"
    # One read of every item's metadata: what get() returns one by one, in insertion order.
    assert index.all_metadata() == [index.get(item_id) for item_id in index.ids()]
    assert [m.item_id for m in index.all_metadata()][-2:] == ["item-5", "fresh"]
    np.testing.assert_array_equal(index.vectors("item-5")[0], as_stored(multi[1]))
    assert index.search(multi[1, 0], top_k=1, exact=True)[0].item_id == "item-5"
    assert index.search(multi[0, 0], top_k=1)[0].item_id == "fresh"

    # Deleted rows and many small segments are merged away; results do not change.
    queries = queries_near(multi, 4)
    before = [hit_ids(h) for h in index.search(queries, top_k=8, exact=True, fusion_weight=1.0)]
    if backend is None:
        assert index.stats()["dead_rows"] > 0
    index.compact()
    assert [hit_ids(h) for h in index.search(queries, top_k=8, exact=True, fusion_weight=1.0)] == before
    assert [hit_ids(h) for h in index.search(queries, top_k=8, candidates=29, fusion_weight=1.0)] == before
    if backend is None:
        assert index.stats()["dead_rows"] == 0 and index.stats()["segments"] == 1
        assert sorted(p.name for p in (tmp_path / "index" / "vectors").iterdir()) == [
            "seg-000002.fusion.npy",
            "seg-000002.multi.npy",
        ]
    else:  # every vector of a deleted or replaced item is gone: 29 items x 8 rows
        assert index.stats()["vector_rows"] == 29 * NUM_QUERIES


def test_staged_changes_are_invisible_until_commit(tmp_path, backend):
    index, (ids, multi, fusion, _meta) = build(tmp_path / "index", n=20, backend=backend)
    extra_ids, extra_multi, extra_fusion, _ = make_items(5, seed=9, prefix="extra")
    index.add(extra_ids, extra_multi, extra_fusion, commit=False)
    index.delete(["item-0"], commit=False)
    assert len(index) == 20 and "extra-0" not in index and "item-0" in index
    index.rollback()
    assert index.commit() == 1  # nothing staged: still generation 1
    if backend is None:
        assert len(list((tmp_path / "index" / "vectors").iterdir())) == 2  # the staged segment is gone

    index.add(extra_ids, extra_multi, extra_fusion, commit=False)
    index.delete(["item-0", "extra-1"], commit=False)
    assert index.commit() == 2
    assert len(index) == 23 and "extra-0" in index and "extra-1" not in index and "item-0" not in index


def test_item_records_as_metadata(tmp_path, backend):
    ids, multi, fusion, _ = make_items(2)
    records = [
        ItemRecord(ids[0], "catalogue/a.png", "dress", {"short": "red dress"}, {"colour": "red"}),
        ItemRecord(ids[1], b"not a path", "shirt"),
    ]
    index = create(tmp_path / "index", backend)
    index.add(ids, multi, fusion, records, fusion_captions=["a red dress", "a shirt"])
    assert index.get(ids[0]) == ItemMetadata(
        ids[0], "dress", {"short": "red dress"}, {"colour": "red"}, "catalogue/a.png", "a red dress"
    )
    assert index.get(ids[1]).image_path == ""
    with pytest.raises(ValueError, match="describes item"):
        index.add(["x"], multi[:1], fusion[:1], [records[0]])


# -- persistence and concurrency -------------------------------------------------------------


SEARCH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from unifashion.index import CatalogueIndex
    index = CatalogueIndex.open(sys.argv[1], read_only=True)
    queries = np.load(sys.argv[2])
    out = []
    for exact in (False, True):
        for hits in index.search(queries, top_k=5, fusion_weight=1.0, exact=exact):
            out.append([[h.item_id, h.score] for h in hits])
    print(json.dumps({"results": out, "size": len(index)}))
    """
)


def search_in_subprocess(path: Path, queries: np.ndarray, tmp_path: Path) -> dict:
    np.save(tmp_path / "queries.npy", queries)
    done = subprocess.run(
        [sys.executable, "-c", SEARCH_SCRIPT, str(path), str(tmp_path / "queries.npy")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def local_results(index: CatalogueIndex, queries: np.ndarray) -> list:
    out = []
    for exact in (False, True):
        for hits in index.search(queries, top_k=5, fusion_weight=1.0, exact=exact):
            out.append([[h.item_id, h.score] for h in hits])
    return out


def test_reopen_in_another_process_gives_identical_results(tmp_path):
    index, (_ids, multi, _fusion, _meta) = build(tmp_path / "index", n=200)
    index.delete(["item-3"])
    queries = queries_near(multi, 4)
    expected = local_results(index, queries)
    index.close()
    # A read-only reopen in another process, after the writer closed (WAL files checkpointed away).
    other = search_in_subprocess(tmp_path / "index", queries, tmp_path)
    assert other == {"results": json.loads(json.dumps(expected)), "size": 199}


def test_one_writer_many_readers(tmp_path, backend):
    writer, (_ids, multi, fusion, _meta) = build(tmp_path / "index", n=50, backend=backend)
    with pytest.raises(IndexLockedError, match="read_only=True"):
        open_index(tmp_path / "index")
    reader = open_index(tmp_path / "index", read_only=True)
    with pytest.raises(PermissionError):
        reader.delete(["item-1"])
    query = multi[7, 0]
    assert hit_ids(reader.search(query, top_k=3)) == hit_ids(writer.search(query, top_k=3))
    # The reader follows the writer's commits, including ones that delete files it has mapped.
    writer.delete(["item-7"])
    writer.compact()
    assert len(reader) == 49 and "item-7" not in hit_ids(reader.search(query, top_k=10))
    writer.close()
    open_index(tmp_path / "index").close()  # the lock is released on close
    reader.close()


# The head of every kill -9 child: its arguments, and a pause at the named stage of a commit
# (the parent kills it there).
CRASH_CHILD_PREAMBLE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from unifashion.index import CatalogueIndex
    from unifashion.index import segments as index_module

    path, stage, num_queries, dim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def pause(name):
        if name == stage:
            print("PAUSED", flush=True)
            time.sleep(120)

    index_module._crash_test_pause = pause
    """
)

CRASH_SCRIPT = CRASH_CHILD_PREAMBLE + textwrap.dedent(
    """
    index_module._WRITE_CHUNK = 1000  # several chunks, so that the kill lands mid-file
    index = CatalogueIndex.open(path)
    rng = np.random.default_rng(5)
    n = 5000
    multi = rng.standard_normal((n, num_queries, dim)).astype(np.float32)
    fusion = rng.standard_normal((n, dim)).astype(np.float32)
    index.delete(["item-0", "item-1"], commit=False)
    index.add([f"crash-{i}" for i in range(n)], multi, fusion, normalize=True)
    print("COMMITTED", flush=True)
    """
)


@pytest.mark.parametrize("stage", ["segment_chunk_written", "before_manifest_switch"])
def test_kill_9_mid_commit_keeps_the_previous_generation(tmp_path, stage):
    path = tmp_path / "index"
    index, (_ids, multi, _fusion, _meta) = build(path, n=100)
    queries = queries_near(multi, 3)
    expected = local_results(index, queries)
    committed_files = sorted(p.name for p in (path / "vectors").iterdir())
    index.close()

    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(path), stage, str(NUM_QUERIES), str(DIM)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "PAUSED", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL

    # Files of the dead generation are on disk, but no manifest names them.
    assert len(list((path / "vectors").iterdir())) > len(committed_files)
    reopened = CatalogueIndex.open(path)  # the dead writer's lock died with it
    assert len(reopened) == 100 and reopened.generation == 1 and "item-0" in reopened
    assert local_results(reopened, queries) == expected

    # The next commit removes the dead generation's files.
    extra_ids, extra_multi, extra_fusion, _ = make_items(3, seed=4, prefix="after")
    reopened.add(extra_ids, extra_multi, extra_fusion)
    names = sorted(p.name for p in (path / "vectors").iterdir())
    assert names == committed_files + ["seg-000001.fusion.npy", "seg-000001.multi.npy"]
    # The 3 items are a delta beside generation 1's base (and its templates).
    assert sorted(p.name for p in (path / "ann").iterdir()) == [
        "ann-g000001.empty.faiss", "ann-g000001.faiss", "ann-g000001.fused.empty.faiss", "ann-g000001.fused.faiss",
        "delta-g000002.faiss", "delta-g000002.fused.faiss"]
    assert len(reopened) == 103


def test_multi_vectors_are_memory_mapped(tmp_path):
    index, _ = build(tmp_path / "index", n=10)
    segments = index._snapshot.segments
    assert all(isinstance(seg.multi, np.memmap) and seg.multi.dtype == np.float16 for seg in segments.values())


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_raises_clear_errors(tmp_path, backend):
    index, (ids, multi, fusion, _meta) = build(tmp_path / "index", n=10, backend=backend)
    query = multi[0, 0]
    new = ["a", "b"]
    with pytest.raises(ValueError, match=r"multi_vectors must have shape .*\(2, 8, 32\)"):
        index.add(new, multi[:2, :4], fusion[:2])
    with pytest.raises(ValueError, match=r"fusion_vectors must have shape .*\(2, 32\)"):
        index.add(new, multi[:2], fusion[:2, :16])
    broken = multi[:2].copy()
    broken[1, 3, 5] = np.nan
    with pytest.raises(ValueError, match="multi_vectors of item 'b' .*NaN"):
        index.add(new, broken, fusion[:2])
    with pytest.raises(ValueError, match="fusion_vectors of item 'a' .*not L2-normalised.*normalize=True"):
        index.add(new, multi[:2], 2 * fusion[:2])
    with pytest.raises(ValueError, match="more than once"):
        index.add(["a", "a"], multi[:2], fusion[:2])
    with pytest.raises(ValueError, match="non-empty string"):
        index.add(["a", 7], multi[:2], fusion[:2])
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        index.add(new, multi[:2], fusion[:2], [{"colour": "red"}, None])
    with pytest.raises(ValueError, match="floating-point"):
        index.add(new, multi[:2].astype(np.int64), fusion[:2])
    assert len(index) == 10
    if backend is None:
        assert len(list((tmp_path / "index" / "vectors").iterdir())) == 2

    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        index.search(query, top_k=0)
    with pytest.raises(ValueError, match="candidates must be an integer >= top_k"):
        index.search(query, top_k=10, candidates=5)
    with pytest.raises(ValueError, match=r"query must have shape \(32,\) or \(Q, 32\)"):
        index.search(np.ones(31, dtype=np.float32))
    with pytest.raises(ValueError, match="query 1 contains NaN"):
        index.search(np.stack([query, np.full(DIM, np.nan, dtype=np.float32)]))
    with pytest.raises(ValueError, match="query 0 is all zeros"):
        index.search(np.zeros(DIM))
    with pytest.raises(ValueError, match="fusion_weight must be a finite number"):
        index.search(query, fusion_weight=float("nan"))
    with pytest.raises(ValueError, match="unknown category 'hat'"):
        index.search(query, category="hat", exact=True)
    with pytest.raises(ValueError, match="unknown ANN kind 'hnsw'" if backend is None else "ann='vectors'"):
        create(tmp_path / "other", backend, ann="hnsw")
    with pytest.raises(FileExistsError, match="CatalogueIndex.open"):
        create(tmp_path / "index", backend)
    with pytest.raises(FileNotFoundError, match="no catalogue index"):
        open_index(tmp_path / "missing")


def test_empty_index_returns_no_hits(tmp_path, backend):
    index = create(tmp_path / "index", backend)
    query = np.ones(DIM, dtype=np.float32)
    assert index.search(query) == [] and index.search(query, exact=True) == []
    assert index.search(np.stack([query, query])) == [[], []]
    assert len(index) == 0 and index.ids() == []


def test_an_index_without_captions_scores_max_sim_alone_and_refuses_fusion(tmp_path, backend):
    """captions=False: items are added without caption vectors, searches at fusion weight 0 match
    the brute-force max-sim, and asking for fusion (or giving caption vectors) is a clear error.
    The setting survives reopening, and a captioned index still requires its caption vectors."""
    ids, multi, fusion, metadata = make_items(120)
    index = create(tmp_path / "bare", backend, captions=False)
    assert index.captions is False
    with pytest.raises(ValueError, match="built without captions: pass fusion_vectors=None"):
        index.add(ids, multi, fusion, metadata)
    index.add(ids, multi, None, metadata)
    query = queries_near(multi, 1)[0]
    expected_ids, expected_scores = brute_force(ids, multi, fusion, query, 10)
    hits = index.search(query, 10, exact=True)
    assert [h.item_id for h in hits] == expected_ids
    np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=2e-3)
    assert all(h.fusion == 0.0 for h in hits)
    with pytest.raises(ValueError, match="built without captions .*fusion_weight=0"):
        index.search(query, 10, fusion_weight=1.0)
    index.close()
    with open_index(tmp_path / "bare", read_only=True, backend=backend) as reopened:
        assert reopened.captions is False
        assert [h.item_id for h in reopened.search(query, 10, exact=True)] == expected_ids

    other = None if backend is None else dataclasses.replace(backend, collection=f"{backend.collection}_captioned")
    captioned = create(tmp_path / "captioned", other)
    assert captioned.captions is True
    with pytest.raises(ValueError, match="fusion_vectors are required"):
        captioned.add(ids, multi, None, metadata)
    captioned.close()
