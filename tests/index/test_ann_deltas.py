"""Append-only FAISS updates (generations.py): each commit writes a delta of the vectors it adds,
encoded with the trained quantisers; opening merges the deltas into the base; a new base is
written once the deltas pass a fraction of it. Results equal one index built over the same items,
commits write bytes in proportion to what they add, deletes remove every vector, crashes between
a delta and the manifest switch lose nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest
from test_index import CRASH_CHILD_PREAMBLE, DIM, NUM_QUERIES, hit_ids, make_items, queries_near

from unifashion.index import CatalogueIndex
from unifashion.index.generations import DELTA_FRACTION
from unifashion.index.vector_ann import VECTORS, VECTORS_FLAT

BASE_ITEMS = 600  # x 8 vectors: trains nlist=4 at once


def trained_index(path, n=BASE_ITEMS, **options):
    data = make_items(n + 400)
    ids, multi, fusion, meta = data
    index = CatalogueIndex.create(path, dim=DIM, num_queries=NUM_QUERIES, nlist=4, nprobe=4, pq_m=8, **options)
    index.add(ids[:n], multi[:n], fusion[:n], meta[:n])
    assert index.ann_kind == VECTORS
    return index, data


def ann_files(path) -> dict[str, os.stat_result]:
    return {p.name: p.stat() for p in sorted((path / "ann").iterdir())}


def manifest_deltas(path) -> list[str]:
    with sqlite3.connect(path / "catalogue.sqlite") as conn:
        return json.loads(conn.execute("SELECT ann_deltas FROM manifest").fetchone()[0])


def results(index, queries, **options) -> list[list[tuple[str, float]]]:
    return [[(h.item_id, h.score) for h in row] for row in index.search(queries, top_k=10, **options)]


def test_appends_write_deltas_and_equal_one_index_over_the_same_items(tmp_path):
    path = tmp_path / "index"
    index, (ids, multi, fusion, meta) = trained_index(path)
    base = ann_files(path)
    for start in range(BASE_ITEMS, BASE_ITEMS + 100, 10):
        index.add(ids[start:start + 10], multi[start:start + 10], fusion[start:start + 10], meta[start:start + 10])
    # The base files were neither rewritten nor renamed; each commit added one delta (plain + fused).
    after = ann_files(path)
    for name, stat in base.items():
        assert (after[name].st_ino, after[name].st_mtime_ns, after[name].st_size) == (
            stat.st_ino, stat.st_mtime_ns, stat.st_size)
    assert manifest_deltas(path) == [f"delta-g{g:06d}.faiss" for g in range(2, 12)]
    assert len(after) == len(base) + 20

    # The merged index equals one built by adding every vector to the trained template at once:
    # the same ids, the same (PQ) distances, for the plain and the fused index.
    ann = index._snapshot.ann
    queries = queries_near(multi, 8)
    for part, weight in (("", None), ("fused", 1.0)):
        name = "ann-g000001.empty.faiss" if not part else "ann-g000001.fused.empty.faiss"
        fresh = faiss.read_index(str(path / "ann" / name))
        items = multi[:BASE_ITEMS + 100] + (0 if weight is None else fusion[:BASE_ITEMS + 100, None, :])
        stored = np.concatenate([index.vectors(i)[0][None] + (0 if weight is None else index.vectors(i)[1])
                                 for i in ids[:BASE_ITEMS + 100]])
        assert stored.shape == items.shape
        keys = np.array([index._store.keys_of([i])[i] for i in ids[:BASE_ITEMS + 100]])
        fresh.add_with_ids(stored.reshape(-1, DIM).astype(np.float32), np.repeat(keys, NUM_QUERIES))
        merged = ann.plain if not part else ann.fused
        assert merged.ntotal == fresh.ntotal == (BASE_ITEMS + 100) * NUM_QUERIES
        d_merged, i_merged = merged.search(queries, 50)
        d_fresh, i_fresh = fresh.search(queries, 50)
        np.testing.assert_array_equal(i_merged, i_fresh)
        np.testing.assert_array_equal(d_merged, d_fresh)

    # Every list probed, candidates covering the catalogue: the same ranking as exact search.
    for weight in (0.0, 1.0):
        assert [[i for i, _ in row] for row in results(index, queries, candidates=700, fusion_weight=weight)] == [
            [i for i, _ in row] for row in results(index, queries, exact=True, fusion_weight=weight)]
    expected = results(index, queries, fusion_weight=1.0)
    index.close()
    with CatalogueIndex.open(path, read_only=True) as reader:
        assert reader._snapshot.ann.plain.ntotal == (BASE_ITEMS + 100) * NUM_QUERIES
        assert results(reader, queries, fusion_weight=1.0) == expected


def test_bytes_written_per_commit_do_not_grow_with_the_index(tmp_path):
    """The same 10-item commit writes a delta of the same size (up to the lists' padding, as the
    two indexes' quantisers were trained on different items) whether the index holds 600 or 1000
    items, and leaves every earlier FAISS file as it was."""
    extra = make_items(10, seed=7, prefix="extra")
    sizes, bases = {}, {}
    for n in (600, 1000):
        path = tmp_path / f"index-{n}"
        index, _data = trained_index(path, n=n)
        bases[n] = base_bytes = sum(s.st_size for name, s in ann_files(path).items() if name.startswith("ann-"))
        before = ann_files(path)
        index.add(*extra)
        after = ann_files(path)
        new = {name: s.st_size for name, s in after.items() if name not in before}
        assert sorted(new) == ["delta-g000002.faiss", "delta-g000002.fused.faiss"]
        assert all(after[name].st_mtime_ns == stat.st_mtime_ns for name, stat in before.items())
        sizes[n] = sum(new.values())
        assert sizes[n] < base_bytes / 10  # 10 items against 600 or more (fast-scan pads lists to 32 codes)
    assert bases[1000] > 1.5 * bases[600]
    assert abs(sizes[1000] - sizes[600]) <= 0.02 * sizes[600]


def test_deltas_past_the_fraction_are_compacted_into_a_new_base(tmp_path):
    path = tmp_path / "index"
    index, (ids, multi, fusion, meta) = trained_index(path)
    limit_items = int(DELTA_FRACTION * BASE_ITEMS)
    step = 50
    start = BASE_ITEMS
    while start + step <= BASE_ITEMS + limit_items:  # up to the fraction: deltas
        index.add(ids[start:start + step], multi[start:start + step], fusion[start:start + step],
                  meta[start:start + step])
        start += step
    assert len(manifest_deltas(path)) == limit_items // step
    index.add(ids[start:start + step], multi[start:start + step], fusion[start:start + step],
              meta[start:start + step])  # past it: one new base, no deltas
    generation = index.generation
    assert manifest_deltas(path) == []
    assert sorted(ann_files(path)) == sorted(
        f"ann-g{generation:06d}{suffix}.faiss" for suffix in ("", ".fused", ".empty", ".fused.empty"))
    written = faiss.read_index(str(path / "ann" / f"ann-g{generation:06d}.faiss"))
    assert written.ntotal == (start + step) * NUM_QUERIES
    # The quantisers were not re-trained.
    template = faiss.read_index(str(path / "ann" / f"ann-g{generation:06d}.empty.faiss"))
    original = index._snapshot.ann.plain.quantizer.reconstruct_n(0, 4)
    np.testing.assert_array_equal(faiss.downcast_index(template.quantizer).reconstruct_n(0, 4), original)
    queries = queries_near(multi, 6)
    assert [hit_ids(r) for r in index.search(queries, top_k=10, candidates=start + step)] == [
        hit_ids(r) for r in index.search(queries, top_k=10, exact=True)]


def test_deletes_remove_every_vector_in_memory_on_reopen_and_at_compaction(tmp_path):
    path = tmp_path / "index"
    index, (ids, multi, fusion, meta) = trained_index(path)
    index.add(ids[600:640], multi[600:640], fusion[600:640], meta[600:640])  # a delta
    gone = ids[:5] + ids[600:605]  # items of the base and of the delta
    index.delete(gone)
    live = 640 - len(gone)
    assert index._snapshot.ann.plain.ntotal == index._snapshot.ann.fused.ntotal == live * NUM_QUERIES
    with sqlite3.connect(path / "catalogue.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM ann_removed").fetchone()[0] == len(gone)
    queries = np.concatenate([multi[:5, 0], multi[600:605, 0], queries_near(multi, 4)])
    expected = results(index, queries, candidates=live, fusion_weight=1.0)
    assert not {i for row in expected for i, _ in row} & set(gone)
    index.close()
    with CatalogueIndex.open(path, read_only=True) as reader:  # the files still hold them; the reader drops them
        assert reader._snapshot.ann.plain.ntotal == live * NUM_QUERIES
        assert results(reader, queries, candidates=live, fusion_weight=1.0) == expected
    index = CatalogueIndex.open(path)
    index.compact()
    assert manifest_deltas(path) == []
    base = faiss.read_index(str(path / "ann" / f"ann-g{index.generation:06d}.faiss"))
    assert base.ntotal == live * NUM_QUERIES  # gone from the files too
    with sqlite3.connect(path / "catalogue.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM ann_removed").fetchone()[0] == 0
    assert results(index, queries, candidates=live, fusion_weight=1.0) == expected


def test_a_reader_follows_appended_deltas_without_reading_the_base_again(tmp_path):
    path = tmp_path / "index"
    writer, (ids, multi, fusion, meta) = trained_index(path)
    reader = CatalogueIndex.open(path, read_only=True)
    loaded = reader._snapshot.ann.plain
    for start in (600, 620):
        writer.add(ids[start:start + 20], multi[start:start + 20], fusion[start:start + 20], meta[start:start + 20])
    writer.delete(ids[:3] + ids[600:602])
    queries = queries_near(multi, 6)
    got = results(reader, queries, fusion_weight=1.0)
    assert reader._snapshot.ann.plain is loaded  # merged into, not re-read
    with CatalogueIndex.open(path, read_only=True) as fresh:
        assert results(fresh, queries, fusion_weight=1.0) == got == results(writer, queries, fusion_weight=1.0)
    assert reader._snapshot.ann.plain.ntotal == (640 - 5) * NUM_QUERIES
    reader.close()


def test_untrained_stage_appends_deltas_too(tmp_path):
    ids, multi, fusion, meta = make_items(60)
    path = tmp_path / "index"
    index = CatalogueIndex.create(path, dim=DIM, num_queries=NUM_QUERIES)  # nlist 1024: stays flat
    index.add(ids[:50], multi[:50], fusion[:50], meta[:50])
    for start in range(50, 60, 2):
        index.add(ids[start:start + 2], multi[start:start + 2], fusion[start:start + 2], meta[start:start + 2])
    assert index.ann_kind == VECTORS_FLAT and len(manifest_deltas(path)) == 5
    query = queries_near(multi, 1)[0]
    assert hit_ids(index.search(query, top_k=5, candidates=5)) == hit_ids(index.search(query, top_k=5, exact=True))


def test_an_index_of_another_format_version_is_refused(tmp_path):
    path = tmp_path / "index"
    CatalogueIndex.create(path, dim=DIM, num_queries=NUM_QUERIES).close()
    with sqlite3.connect(path / "catalogue.sqlite") as conn:
        conn.execute("UPDATE config SET value = '1' WHERE key = 'format_version'")
    with pytest.raises(ValueError, match="has format version 1; this code reads 2"):
        CatalogueIndex.open(path, read_only=True)


DELTA_CRASH_SCRIPT = CRASH_CHILD_PREAMBLE + textwrap.dedent(
    """
    index = CatalogueIndex.open(path)
    rng = np.random.default_rng(5)
    multi = rng.standard_normal((10, num_queries, dim)).astype(np.float32)
    fusion = rng.standard_normal((10, dim)).astype(np.float32)
    index.delete(["item-0"], commit=False)
    index.add([f"crash-{i}" for i in range(10)], multi, fusion, normalize=True)
    print("COMMITTED", flush=True)
    """
)


@pytest.mark.parametrize("stage", ["ann_delta_written", "before_manifest_switch"])
def test_kill_9_between_a_delta_and_the_manifest_keeps_the_previous_generation(tmp_path, stage):
    path = tmp_path / "index"
    index, (ids, multi, fusion, meta) = trained_index(path)
    index.add(ids[600:610], multi[600:610], fusion[600:610], meta[600:610])  # generation 2: one delta
    queries = queries_near(multi, 4)
    expected = results(index, queries, fusion_weight=1.0)
    committed = set(ann_files(path))
    index.close()

    child = subprocess.Popen(
        [sys.executable, "-c", DELTA_CRASH_SCRIPT, str(path), stage, str(NUM_QUERIES), str(DIM)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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

    # The dead commit's delta is on disk, but no manifest names it.
    assert set(ann_files(path)) - committed == {"delta-g000003.faiss", "delta-g000003.fused.faiss"}
    assert manifest_deltas(path) == ["delta-g000002.faiss"]
    with CatalogueIndex.open(path, read_only=True) as reader:
        assert len(reader) == 610 and reader.generation == 2 and "item-0" in reader
        assert results(reader, queries, fusion_weight=1.0) == expected
    reopened = CatalogueIndex.open(path)
    assert results(reopened, queries, fusion_weight=1.0) == expected
    # The next commit replaces the orphan under the same name and commits it.
    reopened.add(ids[610:612], multi[610:612], fusion[610:612], meta[610:612])
    assert manifest_deltas(path) == ["delta-g000002.faiss", "delta-g000003.faiss"]
    assert set(ann_files(path)) - committed == {"delta-g000003.faiss", "delta-g000003.fused.faiss"}
    assert reopened._snapshot.ann.plain.ntotal == 612 * NUM_QUERIES
    reopened.close()
    with CatalogueIndex.open(path, read_only=True) as reader:
        assert len(reader) == 612 and reader._snapshot.ann.plain.ntotal == 612 * NUM_QUERIES


@pytest.mark.parametrize("present", [0, 100, 128, 256])
def test_merging_a_fast_scan_delta_equals_adding_its_vectors(present):
    """Merging into a list whose length is a multiple of the block size (128 codes at 8
    sub-quantisers) corrupted memory through FAISS's merge_from; merge_index equals adding."""
    from unifashion.index.ann import merge_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((present + 40, DIM)).astype(np.float32)
    index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(DIM), DIM, 1, 8, 4, faiss.METRIC_INNER_PRODUCT)
    index.train(rng.standard_normal((2000, DIM)).astype(np.float32))
    template = faiss.clone_index(index)
    fresh = faiss.clone_index(template)
    fresh.add_with_ids(vectors, np.arange(len(vectors)))
    index.add_with_ids(vectors[:present], np.arange(present))
    delta = faiss.clone_index(template)
    delta.add_with_ids(vectors[present:], np.arange(present, len(vectors)))
    merge_index(index, delta)
    assert index.ntotal == len(vectors) and delta.ntotal == 0
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    got, expected = index.search(queries, len(vectors)), fresh.search(queries, len(vectors))
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
