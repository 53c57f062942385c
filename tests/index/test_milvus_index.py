"""What is particular to the Milvus backend (milvus_index.py): grouping search is max-sim, the
fused field serves composed queries, a commit killed half-way is finished or undone by the next
writer, the writer record, bad backend descriptions. The behaviour shared with the local index is
tested in test_index.py through the ``backend`` fixture."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_index import (  # noqa: F401 - milvus_uri: the session's milvus-lite database, a fixture
    DIM,
    NUM_QUERIES,
    brute_force,
    hit_ids,
    make_items,
    milvus_uri,
    queries_near,
)

from conftest import requires
from unifashion.index import CatalogueIndexError, IndexLockedError, MilvusBackend, MilvusCatalogueIndex, open_index

pytestmark = requires("milvus")


@pytest.fixture
def milvus(request) -> MilvusBackend:
    return MilvusBackend(uri=request.getfixturevalue("milvus_uri"),
                         collection=f"m_{abs(hash(request.node.name)) % 10**9}", index_type="FLAT")


@pytest.mark.parametrize("fusion_weight", [0.0, 1.0, 0.5])
def test_grouping_search_gives_the_exact_top_items(tmp_path, milvus, fusion_weight):
    """FLAT grouping search by item over every vector (the fused field at the fused weight 1):
    with candidates = top_k, the exact max-sim (+ fusion) top items and scores. At weight 0.5
    the plain field proposes candidates and the fusion term re-ranks them: exact once the
    candidates cover the catalogue."""
    ids, multi, fusion, meta = make_items(200)
    index = MilvusCatalogueIndex.create(tmp_path / "index", milvus, dim=DIM, num_queries=NUM_QUERIES)
    index.add(ids, multi, fusion, meta)
    candidates = 5 if fusion_weight in (0.0, 1.0) else 200
    for query in queries_near(multi, 5):
        hits = index.search(query, top_k=5, candidates=candidates, fusion_weight=fusion_weight)
        expected_ids, expected_scores = brute_force(ids, multi, fusion, query, 5, fusion_weight)
        assert hit_ids(hits) == expected_ids
        np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=1e-5)
        for h in hits:
            assert h.score == pytest.approx(h.maxsim + fusion_weight * h.fusion, abs=1e-5)
    index.close()


def test_reopened_read_only_gives_identical_results_and_follows_the_writer(tmp_path, milvus):
    ids, multi, fusion, meta = make_items(120)
    writer = MilvusCatalogueIndex.create(tmp_path / "index", milvus, dim=DIM, num_queries=NUM_QUERIES)
    writer.add(ids[:100], multi[:100], fusion[:100], meta[:100])
    queries = queries_near(multi, 4)
    expected = [[(h.item_id, h.score) for h in row] for row in writer.search(queries, top_k=5, fusion_weight=1.0)]
    reader = open_index(tmp_path / "index", read_only=True)  # from backend.json
    assert isinstance(reader, MilvusCatalogueIndex) and reader.generation == 1
    got = [[(h.item_id, h.score) for h in row] for row in reader.search(queries, top_k=5, fusion_weight=1.0)]
    assert got == expected
    with pytest.raises(PermissionError, match="read-only"):
        reader.add(ids[100:], multi[100:], fusion[100:], meta[100:])
    writer.add(ids[100:], multi[100:], fusion[100:], meta[100:], commit=False)
    assert len(reader) == 100  # staged: invisible
    writer.commit()
    assert len(reader) == 120 and reader.generation == 2 and reader.ids() == ids
    writer.close()
    reader.close()


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    sys.path[:0] = [sys.argv[4], os.path.dirname(sys.argv[4])]  # test_index imports the tests' conftest
    from test_index import make_items
    from unifashion.index import MilvusBackend, MilvusCatalogueIndex
    import unifashion.index.milvus_index as milvus_index

    folder, uri, stage = sys.argv[1], sys.argv[2], sys.argv[3]
    ids, multi, fusion, meta = make_items(60)
    index = MilvusCatalogueIndex.create(folder, MilvusBackend(uri=uri, collection="crash", index_type="FLAT"),
                                        dim=multi.shape[2], num_queries=multi.shape[1])
    index.add(ids[:40], multi[:40], fusion[:40], meta[:40])
    print("COMMITTED", flush=True)

    def pause(*args, **kwargs):
        print("PAUSED", flush=True)
        time.sleep(120)

    real_insert = index._client.insert
    def insert_then_pause(name, rows):
        real_insert(name, rows)
        if stage == "vectors_inserted" and name.endswith("_vectors"):
            pause()
    index._client.insert = insert_then_pause
    if stage == "rows_inserted":
        index._finish = pause
    index.delete(["item-0"], commit=False)
    index.add(ids[40:], multi[40:], fusion[40:], meta[40:])
    """
)


@pytest.mark.parametrize("stage, finished", [("vectors_inserted", False), ("rows_inserted", True)])
def test_a_commit_killed_half_way_is_undone_or_finished_by_the_next_writer(tmp_path, stage, finished):
    """kill -9 after the new vector rows (undone: the old generation, intact) or after every new
    row (finished: the deletes and the state switch are completed)."""
    uri = str(tmp_path / "crash.db")
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "index"), uri, stage, os.path.dirname(__file__)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "COMMITTED", child.stderr.read()
        assert child.stdout.readline().strip() == "PAUSED", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    ids, multi, fusion, _meta = make_items(60)
    index = open_index(tmp_path / "index")  # the dead writer's record is taken over, its commit recovered
    assert index._meta("journal") is None
    if finished:
        assert index.generation == 2 and len(index) == 59 and "item-0" not in index and "item-59" in index
        live = ids[1:]
    else:
        assert index.generation == 1 and len(index) == 40 and "item-0" in index and "item-45" not in index
        live = ids[:40]
    assert index.stats()["vector_rows"] == len(live) * NUM_QUERIES  # no orphan rows either way
    rows = [ids.index(i) for i in live]
    for query in queries_near(multi, 3):
        expected, _ = brute_force(live, multi[rows], fusion[rows], query, 5, 1.0)
        assert hit_ids(index.search(query, top_k=5, fusion_weight=1.0)) == expected
    index.close()


def test_one_writer_record_and_bad_backend_descriptions(tmp_path, milvus):
    index = MilvusCatalogueIndex.create(tmp_path / "index", milvus, dim=DIM, num_queries=NUM_QUERIES)
    with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
        MilvusCatalogueIndex.open(tmp_path / "index")
    index.close()
    MilvusCatalogueIndex.open(tmp_path / "index").close()
    with pytest.raises(FileExistsError, match="already has collection"):
        MilvusCatalogueIndex.create(tmp_path / "again", milvus, dim=DIM, num_queries=NUM_QUERIES)
    with pytest.raises(ValueError, match="collection name"):
        MilvusBackend(collection="no-dashes")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "backend.json").write_text(json.dumps({"backend": "qdrant"}))
    with pytest.raises(ValueError, match="names backend 'qdrant'"):
        open_index(tmp_path / "broken")
    stored = json.loads((tmp_path / "index" / "backend.json").read_text())
    assert stored == {"backend": "milvus", "uri": milvus.uri, "collection": milvus.collection,
                      "index_type": "FLAT", "index_params": None}


def test_a_writer_that_died_on_another_host_is_taken_over_only_when_asked(tmp_path, milvus, capsys):
    """A writer record from another host cannot be checked for life: opening for writing is
    refused with the way out named, open_index(break_lock=True) and `--milvus-break-lock` take over."""
    from PIL import Image

    from conftest import build_small_model
    from unifashion.cli import main

    model = build_small_model()
    shape = {"dim": int(model.config.embed_dim), "num_queries": int(model.num_queries)}
    index = MilvusCatalogueIndex.create(tmp_path / "index", milvus, **shape)
    index._set_meta("writer", {"host": "another-host", "pid": 1, "id": "another-host:1:0"})
    index.close()  # the record is not this writer's: it stays
    with pytest.raises(IndexLockedError, match="pid 1 on another-host.*--milvus-break-lock"):
        open_index(tmp_path / "index")
    with open_index(tmp_path / "index", break_lock=True) as taken:
        ids, multi, fusion, meta = make_items(5, **shape)
        taken.add(ids, multi, fusion, meta)
        assert len(taken) == 5
    index = MilvusCatalogueIndex.open(tmp_path / "index")
    index._set_meta("writer", {"host": "another-host", "pid": 1, "id": "another-host:1:0"})
    index.close()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (24, 24), (60 * i, 90, 200)).save(photos / f"p{i}.png")
    (photos / "metadata.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "path": f"p{i}.png", "category": "shirt", "caption": "a shirt"}) + "\n"
        for i in range(2)))
    command = ["index", "--catalogue", str(photos), "--index", str(tmp_path / "index"), "--model", str(model_dir),
               "--no-progress"]
    assert main(command) == 2
    assert "--milvus-break-lock" in capsys.readouterr().err
    assert main([*command, "--milvus-break-lock"]) == 0
    assert "indexed 2 items" in capsys.readouterr().out


def test_a_milvus_lite_file_held_by_another_process_is_a_clear_error(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]); "
                               "print('OPEN', flush=True); time.sleep(60)", str(tmp_path / "held.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "OPEN", holder.stderr.read()
        with pytest.raises(CatalogueIndexError, match="one process at a time"):
            MilvusCatalogueIndex.create(tmp_path / "index", MilvusBackend(uri=str(tmp_path / "held.db")),
                                        dim=DIM, num_queries=NUM_QUERIES)
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_failed_commit_is_undone_and_stays_staged_or_is_finished(tmp_path, milvus):
    ids, multi, fusion, meta = make_items(30)
    index = MilvusCatalogueIndex.create(tmp_path / "index", milvus, dim=DIM, num_queries=NUM_QUERIES)
    index.add(ids[:20], multi[:20], fusion[:20], meta[:20])
    client, real_insert, real_delete = index._client, index._client.insert, index._client.delete

    def insert_failing_on_items(name, rows):
        if name.endswith("_items"):
            raise ConnectionError("the link went down")
        return real_insert(name, rows)

    client.insert = insert_failing_on_items  # vector rows in, item rows not: undone
    with pytest.raises(ConnectionError, match="link went down"):
        index.add(ids[20:], multi[20:], fusion[20:], meta[20:])
    assert index.generation == 1 and len(index) == 20 and index.has_pending_changes
    assert index.stats()["vector_rows"] == 20 * NUM_QUERIES  # the inserted vector rows were removed
    client.insert = real_insert
    assert index.commit() == 2 and len(index) == 30
    assert index.stats()["vector_rows"] == 30 * NUM_QUERIES  # no duplicates from the retry

    failures = iter([ConnectionError("once")])

    def delete_failing_once(*args, **kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return real_delete(*args, **kwargs)

    client.delete = delete_failing_once  # every row in, the deletes failed once: finished
    index.delete(["item-0"])
    client.delete = real_delete
    assert index.generation == 3 and len(index) == 29 and not index.has_pending_changes
    assert index.stats()["vector_rows"] == 29 * NUM_QUERIES and index._meta("journal") is None
    index.close()
