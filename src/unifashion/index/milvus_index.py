"""A catalogue index stored in Milvus (a milvus-lite file or a Milvus cluster), with the interface
of :class:`~unifashion.index.CatalogueIndex`.

How it searches (a grouping search by item is max-sim) is milvus_search.py; its collections and
their rows, the backend description and the connection are milvus_schema.py.

Vectors are stored rounded to float16 (as float32 numbers), the values the local index stores, so
both backends score the same numbers.

Commits. Milvus has no transactions across rows or collections, so a commit is journaled: it
writes the journal (the keys it adds, the keys it deletes), inserts the new vector rows, then the
new item rows, then deletes the deleted items' rows, then moves the state (generation, next key)
on and clears the journal. Searches only see keys below the committed next key, so added items
appear at the state switch, all at once. A writer that finds a journal when it opens finishes the
interrupted commit if all its items were inserted (deletes only start after that) and undoes it
otherwise. Deleted items vanish as their rows are deleted (item rows first: a vector row without an
item row is skipped), so a reader may see a commit's deletes a little before its generation.

One writer at a time: a writer records itself (host, pid) in ``C_meta``; a second writer gets
:class:`IndexLockedError`, unless the recorded one is a dead process on the same host. ``break_lock``
takes over from a writer on another host that died.

pymilvus is imported only when an index is opened (``pip install 'unifashion[milvus]'``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unifashion.index.errors import CatalogueIndexError, IndexLockedError, UnknownItemError
from unifashion.index.milvus_schema import (
    BACKEND_FILE,
    FORMAT_VERSION,
    INSERT_ROWS,
    KEYS_PER_QUERY,
    MAX_LIMIT,
    SCAN_BATCH,
    MilvusBackend,
    collection_names,
    connect,
    create_collections,
    default_index_params,
    item_metadata,
    keys_filter,
    meta_row,
    quoted,
    read_meta,
)
from unifashion.index.milvus_search import MilvusSearch
from unifashion.index.store import ItemMetadata
from unifashion.index.validation import (
    MetadataInput,
    check_all_held,
    check_batch,
    check_fusion_vectors_given,
    check_ids,
    check_index_options,
    check_not_held,
    check_positive_int,
    held_after_staging,
    item_row,
    stored_vectors,
)
from unifashion.objectives.fusion import fused_score
from unifashion.settings import SEARCH

__all__ = ["BACKEND_FILE", "MilvusBackend", "MilvusCatalogueIndex"]


class MilvusCatalogueIndex(MilvusSearch):
    """Storage and max-sim search of a catalogue in Milvus; the interface of
    :class:`~unifashion.index.CatalogueIndex` (see the module docstring for how it maps)."""
    def __init__(self, folder: Path, backend: MilvusBackend, read_only: bool, client: Any, config: dict[str, Any]):
        """Use :meth:`create` or :meth:`open`."""
        self.folder = folder
        self.backend = backend
        self.read_only = read_only
        self._client = client
        self._lock = threading.RLock()
        self._names = collection_names(backend.collection)
        self.dim = int(config["dim"])
        self.num_queries = int(config["num_queries"])
        self.fused_weight = float(config["fused_weight"])
        self.captions = bool(config.get("captions", True))
        self.nprobe = int(config["nprobe"])
        self._config = config
        self._closed = False
        self._writer_id: str | None = None
        self._categories_cache: tuple[int, dict[str, int]] | None = None
        self._reset_pending()

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        backend: MilvusBackend | None = None,
        *,
        dim: int = 256,
        num_queries: int = 32,
        ann: str = "vectors",
        nlist: int = 1024,
        nprobe: int = SEARCH.nprobe,
        pq_m: int | None = None,
        fused_weight: float = SEARCH.fusion_weight,
        captions: bool = True,
    ) -> MilvusCatalogueIndex:
        """Create the index's collections and its folder (which holds ``backend.json``, and the
        milvus-lite file when ``backend.uri`` is None), and open it for writing. ``nlist`` /
        ``nprobe`` configure IVF index types; ``pq_m`` is a FAISS setting, unused here.
        ``captions=False``: items without caption-fusion vectors (as :meth:`CatalogueIndex.create`)."""
        backend = backend or MilvusBackend()
        folder = Path(path)
        fused_weight = check_index_options(dim, num_queries, fused_weight, captions)
        for name, value in (("nlist", nlist), ("nprobe", nprobe)):
            check_positive_int(value, name)
        if ann != "vectors":
            raise ValueError(f"the Milvus backend indexes every item vector (ann='vectors'), got ann={ann!r}")
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"{folder} exists and is not an empty folder; use MilvusCatalogueIndex.open "
                                  "(or unifashion.index.open_index) to reopen an index")
        folder.mkdir(parents=True, exist_ok=True)
        client = connect(folder, backend)
        names = collection_names(backend.collection)
        existing = [n for n in names.values() if client.has_collection(n)]
        if existing:
            raise FileExistsError(f"Milvus at {backend.resolved_uri(folder)} already has collection(s) "
                                  f"{', '.join(existing)}; pick another --milvus-collection or drop them")
        params = backend.index_params if backend.index_params is not None else default_index_params(
            backend.index_type, nlist)
        config = {"format_version": FORMAT_VERSION, "dim": int(dim), "num_queries": int(num_queries),
                  "fused_weight": float(fused_weight), "captions": captions, "nprobe": int(nprobe),
                  "index_type": backend.index_type, "index_params": params}
        create_collections(client, names, config)
        client.upsert(names["meta"], [meta_row("config", config),
                                      meta_row("state", {"generation": 0, "next_key": 0})])
        (folder / BACKEND_FILE).write_text(json.dumps(backend.to_file(), indent=2) + "\n")
        return cls.open(folder, backend=backend, _client=client)

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False, *, backend: MilvusBackend | None = None,
             break_lock: bool = False, _client: Any = None) -> MilvusCatalogueIndex:
        """Open an index made by :meth:`create`. ``backend`` overrides ``backend.json`` (e.g. to
        pass a token); ``break_lock`` takes the write lock from a recorded writer that is gone."""
        folder = Path(path)
        if backend is None:
            if not (folder / BACKEND_FILE).is_file():
                raise FileNotFoundError(f"no catalogue index at {folder} (missing {BACKEND_FILE})")
            backend = MilvusBackend.from_file(folder)
        client = _client or connect(folder, backend)
        meta = f"{backend.collection}_meta"
        if not client.has_collection(meta):
            raise FileNotFoundError(f"no catalogue index in Milvus at {backend.resolved_uri(folder)} "
                                    f"(no collection {meta})")
        for part in ("meta", "items", "vectors"):
            client.load_collection(f"{backend.collection}_{part}")  # a restarted server has them released
        config = read_meta(client, meta, "config")
        if config is None or config.get("format_version") != FORMAT_VERSION:
            version = None if config is None else config.get("format_version")
            raise ValueError(f"the Milvus index {backend.collection} has format {version}; "
                             f"this code reads {FORMAT_VERSION}")
        index = cls(folder, backend, read_only, client, config)
        if not read_only:
            index._take_writer_lock(break_lock)
            index._recover()
        return index

    def _take_writer_lock(self, break_lock: bool) -> None:
        writer = self._meta("writer")
        if writer is not None and not break_lock:
            alive = True
            if writer.get("host") == socket.gethostname():
                try:
                    os.kill(int(writer["pid"]), 0)
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
            if alive:
                raise IndexLockedError(
                    f"the Milvus index {self.backend.collection} is open for writing by pid {writer.get('pid')} on "
                    f"{writer.get('host')}; open it with read_only=True to search it (or, if that writer is gone, "
                    "break_lock=True: --milvus-break-lock on the command line)")
        self._writer_id = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._set_meta("writer", {"host": socket.gethostname(), "pid": os.getpid(), "id": self._writer_id})

    def close(self) -> None:
        """Discard uncommitted changes and release the write lock."""
        with self._lock:
            if self._closed:
                return
            if not self.read_only:
                self.rollback()
                writer = self._meta("writer")
                if writer is not None and writer.get("id") == self._writer_id:
                    self._client.delete(self._names["meta"], ids=["writer"])
            self._client.close()
            self._closed = True

    def __enter__(self) -> MilvusCatalogueIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"MilvusCatalogueIndex({self.backend.collection!r}, closed)"
        mode = "read-only" if self.read_only else "writable"
        return f"MilvusCatalogueIndex({self.backend.collection!r}, items={len(self)}, {mode})"

    # -- meta rows ---------------------------------------------------------------------------

    def _meta(self, name: str) -> Any:
        return read_meta(self._client, self._names["meta"], name)

    def _set_meta(self, name: str, value: Any) -> None:
        self._client.upsert(self._names["meta"], [meta_row(name, value)])

    def _state(self) -> dict[str, int]:
        if self._closed:
            raise CatalogueIndexError("the index is closed")
        return self._meta("state")

    # -- inspection --------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        with self._lock:
            return int(self._state()["generation"])

    @property
    def ann_kind(self) -> str:
        return f"milvus-{self._config['index_type'].lower()}"

    @property
    def model_identity(self) -> str | None:
        with self._lock:
            return self._meta("model_identity")

    def record_model_identity(self, identity: str) -> None:
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"a model identity must be a non-empty string, got {identity!r}")
        with self._lock:
            self._check_writable()
            self._set_meta("model_identity", identity)

    def _visible(self) -> str:
        return f"key < {int(self._state()['next_key'])}"

    def _scan(self, part: str, filter_text: str, fields: Sequence[str], high_key: int) -> Any:
        """Batches of the rows of a collection matching a filter, by windows of item keys below
        ``high_key`` (Milvus caps the rows of one query)."""
        key_field = "key" if part == "items" else "item_key"
        window = SCAN_BATCH if part == "items" else max(1, SCAN_BATCH // self.num_queries)
        for low in range(0, high_key, window):
            rows = self._client.query(
                self._names[part], filter=f"{key_field} >= {low} and {key_field} < {low + window} and ({filter_text})",
                output_fields=list(fields), limit=MAX_LIMIT)
            if rows:
                yield rows

    def _item_rows(self, filter_text: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        """Every item row matching a filter."""
        high = int(self._state()["next_key"])
        return [row for batch in self._scan("items", filter_text, fields, high) for row in batch]

    def __len__(self) -> int:
        with self._lock:
            found = self._client.query(self._names["items"], filter=self._visible(), output_fields=["count(*)"])
            return int(found[0]["count(*)"])

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            return isinstance(item_id, str) and self._location(item_id) is not None

    def _location(self, item_id: str) -> int | None:
        rows = self._client.query(self._names["items"], filter=f"item_id == {quoted(item_id)} and {self._visible()}",
                                  output_fields=["key"], limit=1)
        return int(rows[0]["key"]) if rows else None

    def ids(self) -> list[str]:
        """Committed item ids, in insertion order."""
        with self._lock:
            rows = self._item_rows(self._visible(), ["key", "item_id"])
        return [r["item_id"] for r in sorted(rows, key=lambda r: r["key"])]

    def all_metadata(self) -> list[ItemMetadata]:
        """The metadata of every committed item, in insertion order (scanned in key windows)."""
        with self._lock:
            rows = self._item_rows(self._visible(), ["key", "item_id", "category", "metadata"])
        return [item_metadata(r) for r in sorted(rows, key=lambda r: r["key"])]

    def categories(self) -> dict[str, int]:
        with self._lock:
            generation = self.generation
            if self._categories_cache is None or self._categories_cache[0] != generation:
                counts: dict[str, int] = {}
                for row in self._item_rows(self._visible(), ["category"]):
                    counts[row["category"]] = counts.get(row["category"], 0) + 1
                self._categories_cache = (generation, dict(sorted(counts.items())))
            return dict(self._categories_cache[1])

    def get(self, item_id: str) -> ItemMetadata:
        with self._lock:
            rows = self._client.query(self._names["items"],
                                      filter=f"item_id == {quoted(item_id)} and {self._visible()}",
                                      output_fields=["item_id", "category", "metadata"], limit=1)
        if not rows:
            raise UnknownItemError(f"no item {item_id!r} in the Milvus index {self.backend.collection}")
        return item_metadata(rows[0])

    def vectors(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The stored (fp16-rounded) multi-vectors (num_queries, dim) and fusion vector (dim,)."""
        with self._lock:
            key = self._location(item_id)
            if key is None:
                raise UnknownItemError(f"no item {item_id!r} in the Milvus index {self.backend.collection}")
            rows = self._client.query(self._names["vectors"], filter=f"item_key == {key}",
                                      output_fields=["pk", "vector"], limit=self.num_queries)
            item = self._client.query(self._names["items"], filter=f"key == {key}", output_fields=["fusion"], limit=1)
        rows.sort(key=lambda r: r["pk"])
        return (np.array([r["vector"] for r in rows], dtype=np.float32),
                np.asarray(item[0]["fusion"], dtype=np.float32))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            state = self._state()
            return {"items": len(self), "generation": int(state["generation"]), "backend": "milvus",
                    "uri": self.backend.resolved_uri(self.folder), "collection": self.backend.collection,
                    "ann_kind": self.ann_kind, "ann_config": {k: self._config[k] for k in (
                        "index_type", "index_params", "nprobe", "fused_weight")},
                    "dim": self.dim, "num_queries": self.num_queries,
                    "vector_rows": int(self._client.get_collection_stats(self._names["vectors"])["row_count"])}

    # -- writing -----------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"the Milvus index {self.backend.collection} is open read-only")
        if self._closed:
            raise CatalogueIndexError("the index is closed")

    def _reset_pending(self) -> None:
        self._pending_items: dict[str, tuple[dict[str, Any], np.ndarray, np.ndarray]] = {}  # id -> (row, multi, fusion)
        self._pending_deletes: set[int] = set()

    @property
    def has_pending_changes(self) -> bool:
        return bool(self._pending_items or self._pending_deletes)

    def add(self, ids: Sequence[str], multi_vectors: Any, fusion_vectors: Any,
            metadata: Sequence[MetadataInput] | None = None, *, fusion_captions: Sequence[str] | None = None,
            normalize: bool = False, commit: bool = True, progress: bool | None = None) -> None:
        """Add new items (see :meth:`CatalogueIndex.add`)."""
        self._add(ids, multi_vectors, fusion_vectors, metadata, fusion_captions, normalize, commit, False)

    def upsert(self, ids: Sequence[str], multi_vectors: Any, fusion_vectors: Any,
               metadata: Sequence[MetadataInput] | None = None, *, fusion_captions: Sequence[str] | None = None,
               normalize: bool = False, commit: bool = True, progress: bool | None = None) -> None:
        """Like :meth:`add`, but an id already in the index has its vectors and metadata replaced."""
        self._add(ids, multi_vectors, fusion_vectors, metadata, fusion_captions, normalize, commit, True)

    def _committed_keys(self, item_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        visible = self._visible()
        for start in range(0, len(item_ids), KEYS_PER_QUERY):
            batch = item_ids[start:start + KEYS_PER_QUERY]
            names = ", ".join(quoted(i) for i in batch)
            for row in self._client.query(self._names["items"], filter=f"item_id in [{names}] and {visible}",
                                          output_fields=["key", "item_id"], limit=len(batch)):
                found[row["item_id"]] = int(row["key"])
        return found

    def _add(self, ids, multi_vectors, fusion_vectors, metadata, fusion_captions, normalize, commit, upsert) -> None:
        with self._lock:
            self._check_writable()
            item_ids = check_ids(ids, "ids")
            count = len(item_ids)
            check_fusion_vectors_given(self.captions, fusion_vectors, self.folder)
            multi_vectors, fusion_vectors = check_batch(
                count, multi_vectors, fusion_vectors, metadata, fusion_captions, self.num_queries, self.dim)
            if count == 0:
                return
            committed = self._committed_keys(item_ids)
            existing = held_after_staging(item_ids, self._pending_items, committed, self._pending_deletes)
            if not upsert:
                check_not_held(item_ids, existing)
            # The values the local index stores (fp16), so that both backends score the same numbers.
            multi, fusion = stored_vectors(multi_vectors, fusion_vectors, item_ids, 0, normalize, self.dim)
            multi, fusion = multi.astype(np.float32), fusion.astype(np.float32)
            rows = []
            for position, item_id in enumerate(item_ids):
                meta = metadata[position] if metadata is not None else None
                caption = fusion_captions[position] if fusion_captions is not None else None
                rows.append(item_row(-1, item_id, 0, 0, meta, caption))  # key assigned at commit
            for item_id in existing:
                if self._pending_items.pop(item_id, None) is None:
                    self._pending_deletes.add(committed[item_id])
            for position, row in enumerate(rows):
                self._pending_items[row.item_id] = (row, multi[position], fusion[position])
            if commit:
                self.commit()

    def delete(self, ids: Sequence[str], *, commit: bool = True) -> None:
        with self._lock:
            self._check_writable()
            item_ids = check_ids(ids, "ids")
            committed = self._committed_keys(item_ids)
            held = held_after_staging(item_ids, self._pending_items, committed, self._pending_deletes)
            check_all_held(item_ids, held, f"the Milvus index {self.backend.collection}")
            for item_id in item_ids:
                if self._pending_items.pop(item_id, None) is None:
                    self._pending_deletes.add(committed[item_id])
            if commit:
                self.commit()

    def rollback(self) -> None:
        with self._lock:
            if not self.read_only:
                self._reset_pending()

    def commit(self) -> int:
        """Apply staged changes (journaled, see the module docstring); returns the new generation.
        If it fails, the half-done commit is finished (when all its rows were inserted) or undone
        at once; when undone, the changes stay staged and the error is raised."""
        with self._lock:
            self._check_writable()
            if not self.has_pending_changes:
                return self.generation
            if self._meta("journal") is not None:  # an earlier failed commit whose clean-up failed too
                self._recover()
            state = self._state()
            first_key = int(state["next_key"])
            staged = list(self._pending_items.values())
            deleted = sorted(self._pending_deletes)
            journal = {"from_key": first_key, "to_key": first_key + len(staged), "deleted": deleted,
                       "generation": int(state["generation"]) + 1}
            self._set_meta("journal", journal)
            try:
                self._insert(first_key, staged)
                self._finish(journal)
            except BaseException:
                if self._recover_quietly() != journal["generation"]:
                    raise
            self._reset_pending()
            return journal["generation"]

    def _recover_quietly(self) -> int | None:
        """:meth:`_recover` after a failed commit; the generation then committed, or None if the
        clean-up failed too (the next commit or writer retries it)."""
        try:
            self._recover()
            return self.generation
        except Exception:
            return None

    def _insert(self, first_key: int, staged: list[tuple[Any, np.ndarray, np.ndarray]]) -> None:
        vector_rows, item_rows = [], []
        for offset, (row, multi, fusion) in enumerate(staged):
            key = first_key + offset
            fused = fused_score(multi, fusion[None, :], self.fused_weight) if self.fused_weight else None
            for slot in range(self.num_queries):
                entry = {"pk": key * self.num_queries + slot, "item_key": key, "category": row.category,
                         "vector": multi[slot]}
                if fused is not None:
                    entry["fused"] = fused[slot]
                vector_rows.append(entry)
            item_rows.append({"key": key, "item_id": row.item_id, "category": row.category, "fusion": fusion,
                              "metadata": {"captions": json.loads(row.captions),
                                           "attributes": json.loads(row.attributes),
                                           "image_path": row.image_path, "fusion_caption": row.fusion_caption}})
        # Vectors before items: an item row is what makes an item findable.
        for rows, name in ((vector_rows, "vectors"), (item_rows, "items")):
            for start in range(0, len(rows), INSERT_ROWS):
                self._client.insert(self._names[name], rows[start:start + INSERT_ROWS])

    def _finish(self, journal: dict[str, Any]) -> None:
        """The rest of a commit once its rows are inserted: deletes, then the state switch."""
        deleted = journal["deleted"]
        for start in range(0, len(deleted), KEYS_PER_QUERY):
            batch = deleted[start:start + KEYS_PER_QUERY]
            self._client.delete(self._names["items"], filter=keys_filter("key", batch))
            self._client.delete(self._names["vectors"], filter=keys_filter("item_key", batch))
        self._set_meta("state", {"generation": journal["generation"], "next_key": journal["to_key"]})
        self._client.delete(self._names["meta"], ids=["journal"])

    def _recover(self) -> None:
        """Finish or undo a commit that a dead writer left half-done."""
        journal = self._meta("journal")
        if journal is None:
            return
        low, high = journal["from_key"], journal["to_key"]
        inserted = self._client.query(self._names["items"], filter=f"key >= {low} and key < {high}",
                                      output_fields=["count(*)"])
        if int(inserted[0]["count(*)"]) == high - low:
            self._finish(journal)
            return
        self._client.delete(self._names["items"], filter=f"key >= {low}")
        self._client.delete(self._names["vectors"], filter=f"item_key >= {low}")
        self._client.delete(self._names["meta"], ids=["journal"])

    def compact(self) -> int:
        """Ask Milvus to compact the vector collection (it merges segments and drops deleted
        rows itself); the generation does not change."""
        with self._lock:
            self._check_writable()
            if self.has_pending_changes:
                raise CatalogueIndexError("commit() or rollback() the staged changes before compacting")
            self._client.compact(self._names["vectors"])
            return self.generation

    # -- search ------------------------------------------------------------------------------
