"""A catalogue index for multi-vector (max-sim) retrieval, independent of the model.

The model represents each catalogue image as Z, ``num_queries`` (32) L2-normalised vectors of
``dim`` (256), and a text or composed query as one vector e. An item's score for a query is
max-sim, ``max_q <e, Z_q>``; composed retrieval adds caption fusion, ``+ w * <e, Z_C>``, where
Z_C is the text embedding of the caption the model generated for the item (stored with it).

Search runs in two stages. A FAISS index over every item vector (vector_ann.py: 32 per item,
each with its item's key as id) proposes ``candidates`` items, the items of its nearest vectors
(for composed queries at the index's fused weight, of a second index over the fused vectors
``Z_q + w Z_C``); their exact max-sim (+ fusion) scores are then computed from the stored
multi-vectors and the best ``top_k`` returned. ``exact=True`` scores every item instead, in
memory-bounded chunks.

Layout of an index folder::

    catalogue.sqlite            metadata, config and the manifest (see store.py)
    writer.lock                 flock-ed by the one process that may write
    vectors/seg-000007.multi.npy    (rows, num_queries, dim) float16, memory-mapped
    vectors/seg-000007.fusion.npy   (rows, dim) float16, memory-mapped
    ann/ann-g000012.faiss       the base FAISS index, written by generation 12 (and its fused
                                part and templates beside it, see generations.py)
    ann/delta-g000013.faiss     the vectors generation 13 added to it

Vectors live in immutable *segments* (segments.py): each ``add`` writes one new segment, so
committing never rewrites the (large) multi-vectors of earlier items. Deleted items leave dead
rows behind, which :meth:`CatalogueIndex.compact` drops. The FAISS index (ann.py) is append-only
too: a commit writes a delta file with the vectors it adds (encoded with the trained quantisers),
and a new base file only when the deltas have grown past a fraction of the base. How a commit
stays crash-safe is described, and implemented, in generations.py.

Concurrency. One writer at a time (an flock on ``writer.lock``), any number of read-only openers
in other processes; they notice a new generation at their next call and reload. Within one
process an instance is thread-safe; its calls are serialised.

The module holds :class:`CatalogueIndex` only; its parts live beside it: kernels.py (scoring),
segments.py (vector files), ann.py (the FAISS candidate stage), generations.py (snapshots and
the commit protocol), snapshot_search.py (the two search paths, :class:`Hit`), validation.py
(input checks), store.py (the SQLite metadata) and errors.py.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unifashion.index.ann import VECTORS, AnnConfig, check_ann_config
from unifashion.index.errors import CatalogueIndexError, IndexLockedError, UnknownItemError
from unifashion.index.generations import (
    ANN_DIR,
    Snapshot,
    bytes_on_disk,
    commit_generation,
    compact_generation,
    load_snapshot,
    rebuild_generation,
    remove_stale_files,
)
from unifashion.index.segments import VECTORS_DIR, remove_segment_files, write_segment
from unifashion.index.snapshot_search import Hit, attach_metadata, category_code, search_ann, search_exact
from unifashion.index.store import DATABASE_NAME, ItemMetadata, ItemRow, MetadataStore
from unifashion.index.validation import (
    MetadataInput,
    check_all_held,
    check_batch,
    check_fusion_vectors_given,
    check_ids,
    check_index_options,
    check_not_held,
    check_search,
    held_after_staging,
    item_row,
    no_captions_error,
)
from unifashion.index.vector_ann import VECTORS_FLAT
from unifashion.settings import SEARCH

LOCK_NAME = "writer.lock"
#: Config key under which the builder records the identity of the model that made the vectors.
MODEL_IDENTITY_KEY = "model_identity"
#: Config key: whether the items carry caption-fusion vectors.
CAPTIONS_KEY = "captions"



class CatalogueIndex:
    """Storage and max-sim search of a catalogue's multi-vectors, metadata and caption vectors.

    Make one with :meth:`create`, reopen it with :meth:`open`. ``add`` / ``upsert`` / ``delete``
    stage changes and, by default, commit them at once; pass ``commit=False`` to group several
    calls into one :meth:`commit` (fewer, larger segment and FAISS delta files). Uncommitted
    changes are invisible to every reader, this instance's searches included.
    """

    def __init__(self, folder: Path, read_only: bool, lock_fd: int | None):
        """Use :meth:`create` or :meth:`open`."""
        self.folder = folder
        self.read_only = read_only
        self._lock_fd = lock_fd
        self._lock = threading.RLock()
        self._store = MetadataStore(folder, read_only=read_only)
        config = self._store.config()
        self.dim = int(config["dim"])
        self.num_queries = int(config["num_queries"])
        self.captions = bool(config[CAPTIONS_KEY])
        self._ann_config = AnnConfig.from_config(config)
        self._snapshot = self._load_snapshot()
        self._reset_pending()

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        dim: int = 256,
        num_queries: int = 32,
        ann: str = VECTORS,
        nlist: int = 1024,
        nprobe: int = SEARCH.nprobe,  # why 16: settings.SearchSettings
        pq_m: int | None = None,
        fused_weight: float = SEARCH.fusion_weight,
        captions: bool = True,
    ) -> CatalogueIndex:
        """Create an empty index in folder ``path`` (new or empty) and open it for writing.

        ``ann`` names the candidate stage; ``"vectors"`` (vector_ann.py) is the one there is: an
        IndexIVFPQFastScan over every item vector (``nlist`` lists, ``nprobe`` searched,
        ``pq_m`` 4-bit sub-quantisers, default the largest divisor of ``dim`` up to ``dim / 2``;
        the fused index has half as many), its hits grouped by item, plus one over the fused
        vectors ``Z_q + fused_weight * Z_C`` for composed queries at that fusion weight
        (``fused_weight=0``: none). It is trained on the stored vectors at the first commit where
        the index holds 39 vectors per list; until then it is exact (flat). See :meth:`rebuild_ann`.

        ``captions=False``: the items carry no caption-fusion vectors (``add`` takes
        ``fusion_vectors=None``; search only with ``fusion_weight=0``), so no fused index is built.
        Indexing then skips captioning, the slowest part of embedding an item.
        """
        fused_weight = check_index_options(dim, num_queries, fused_weight, captions)
        folder = Path(path)
        if pq_m is None:
            # One 4-bit sub-quantiser per 2 dims (benchmarks/results/search.md): the largest count
            # up to that which divides dim.
            most = max(1, int(dim) // 2)
            pq_m = max(m for m in range(1, most + 1) if int(dim) % m == 0)
        ann_config = check_ann_config(ann, nlist, nprobe, pq_m, dim, fused_weight)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(
                f"{folder} exists and is not an empty folder; use CatalogueIndex.open to reopen an index"
            )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / VECTORS_DIR).mkdir()
        (folder / ANN_DIR).mkdir()
        MetadataStore.create(folder, {"dim": int(dim), "num_queries": int(num_queries), CAPTIONS_KEY: captions,
                                      **ann_config.as_config()}, empty_ann_kind=VECTORS_FLAT)
        return cls.open(folder)

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False) -> CatalogueIndex:
        """Open an existing index. A writer (``read_only=False``) takes the folder's write lock."""
        folder = Path(path)
        if not (folder / DATABASE_NAME).is_file():
            raise FileNotFoundError(f"no catalogue index at {folder} (missing {DATABASE_NAME})")
        lock_fd = None
        if not read_only:
            lock_fd = os.open(folder / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise IndexLockedError(
                    f"{folder} is open for writing elsewhere; open it with read_only=True to search it"
                ) from None
        try:
            return cls(folder, read_only, lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    def close(self) -> None:
        """Discard uncommitted changes and release the files and the write lock."""
        with self._lock:
            if self._snapshot is None:
                return
            if not self.read_only:
                self.rollback()
            self._store.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
            self._snapshot = None

    def __enter__(self) -> CatalogueIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writable"
        if self._snapshot is None:
            return f"CatalogueIndex({str(self.folder)!r}, closed)"
        return f"CatalogueIndex({str(self.folder)!r}, items={len(self)}, ann={self.ann_kind!r}, {mode})"

    # -- loading committed state -------------------------------------------------------------

    def _load_snapshot(self, previous: Snapshot | None = None) -> Snapshot:
        return load_snapshot(self.folder, self._store, self.num_queries, self.dim, previous)

    def _refresh_if_stale(self) -> None:
        """Readers pick up generations that a writer committed since they last looked."""
        if self._snapshot is None:
            raise CatalogueIndexError("the index is closed")
        # A writer holds the lock: nobody else can commit, so its snapshot is always current.
        if self.read_only and self._store.generation() != self._snapshot.manifest.generation:
            # Reads only the deltas appended since, when the base is the same.
            self._snapshot = self._load_snapshot(previous=self._snapshot)
            # rebuild_ann may have changed the ANN settings
            self._ann_config = AnnConfig.from_config(self._store.config())

    # -- inspection --------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The committed generation this instance sees (bumped by every commit)."""
        with self._lock:
            self._refresh_if_stale()
            return self._snapshot.manifest.generation

    @property
    def model_identity(self) -> str | None:
        """What the builder recorded of the model that made the vectors (a digest of its weights),
        or None for an index that records none."""
        with self._lock:
            return self._store.config().get(MODEL_IDENTITY_KEY)

    def record_model_identity(self, identity: str) -> None:
        """Record the identity of the model whose vectors the index holds (writers only)."""
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"a model identity must be a non-empty string, got {identity!r}")
        with self._lock:
            self._check_writable()
            self._store.set_config(MODEL_IDENTITY_KEY, identity)

    @property
    def ann_kind(self) -> str:
        """The candidate stage actually built: "vectors-flat" until the IVF is trained, then "vectors"."""
        with self._lock:
            self._refresh_if_stale()
            return self._snapshot.manifest.ann_kind

    def __len__(self) -> int:
        with self._lock:
            self._refresh_if_stale()
            return self._snapshot.size

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            return isinstance(item_id, str) and self._store.location_of(item_id) is not None

    def ids(self) -> list[str]:
        """Committed item ids, in insertion order."""
        with self._lock:
            return self._store.item_ids()

    def all_metadata(self) -> list[ItemMetadata]:
        """The metadata of every committed item, in insertion order (one read, not one per item)."""
        with self._lock:
            return self._store.all_metadata()

    def categories(self) -> dict[str, int]:
        """Number of committed items per category."""
        with self._lock:
            self._refresh_if_stale()
            snap = self._snapshot
            counts = np.bincount(snap.key_category, minlength=len(snap.category_names))
            return {name: int(counts[i]) for i, name in enumerate(snap.category_names)}

    def get(self, item_id: str) -> ItemMetadata:
        """The metadata of a committed item; :class:`UnknownItemError` if there is none."""
        with self._lock:
            metadata = self._store.get(item_id)
        if metadata is None:
            raise UnknownItemError(f"no item {item_id!r} in the index at {self.folder}")
        return metadata

    def vectors(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The stored (fp16-rounded) multi-vectors (num_queries, dim) and fusion vector (dim,)."""
        with self._lock:
            self._refresh_if_stale()
            location = self._store.location_of(item_id)
            if location is None:
                raise UnknownItemError(f"no item {item_id!r} in the index at {self.folder}")
            _key, segment_id, row = location
            if segment_id not in self._snapshot.segments:  # committed by a writer just now
                self._snapshot = self._load_snapshot()
            segment = self._snapshot.segments[segment_id]
            return segment.multi[row].astype(np.float32), segment.fusion[row].astype(np.float32)

    def stats(self) -> dict[str, Any]:
        """Sizes and layout: items, dead rows awaiting :meth:`compact`, bytes on disk by kind."""
        with self._lock:
            self._refresh_if_stale()
            snap = self._snapshot
            segment_rows = sum(seg.rows for seg in snap.segments.values())
            return {
                "items": snap.size,
                "generation": snap.manifest.generation,
                "segments": len(snap.segments),
                "dead_rows": segment_rows - snap.size,
                "ann_kind": snap.manifest.ann_kind,
                "ann_config": self._ann_config.as_dict(),
                "dim": self.dim,
                "num_queries": self.num_queries,
                "captions": self.captions,
                "bytes": bytes_on_disk(self.folder, snap),
            }

    # -- writing -----------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"the index at {self.folder} is open read-only")
        if self._snapshot is None:
            raise CatalogueIndexError("the index is closed")

    def _reset_pending(self) -> None:
        manifest = self._snapshot.manifest
        self._pending_segments: list[tuple[int, int]] = []
        self._pending_items: dict[str, ItemRow] = {}
        self._pending_deletes: set[int] = set()
        self._next_key = manifest.next_key
        self._next_segment = manifest.next_segment

    @property
    def has_pending_changes(self) -> bool:
        return bool(self._pending_segments or self._pending_deletes)

    def add(
        self,
        ids: Sequence[str],
        multi_vectors: Any,
        fusion_vectors: Any,
        metadata: Sequence[MetadataInput] | None = None,
        *,
        fusion_captions: Sequence[str] | None = None,
        normalize: bool = False,
        commit: bool = True,
        progress: bool | None = None,
    ) -> None:
        """Add items. Ids already in the index raise :class:`DuplicateItemError` (see :meth:`upsert`).

        multi_vectors: (N, num_queries, dim) floats, each vector L2-normalised (or pass
        ``normalize=True``); may be a memory-mapped array, read in chunks. fusion_vectors:
        (N, dim), the embeddings of the items' generated captions, L2-normalised (None, and only
        None, for an index created with ``captions=False``). metadata: per
        item an :class:`ItemRecord`, an :class:`ItemMetadata`, a mapping with keys among
        category / captions / attributes / image_path / fusion_caption, or None.
        fusion_captions: the generated caption texts (else taken from the metadata).
        Vectors are stored as float16. Nothing is changed if any input is invalid.
        """
        self._add(ids, multi_vectors, fusion_vectors, metadata, fusion_captions, normalize, commit, progress, False)

    def upsert(
        self,
        ids: Sequence[str],
        multi_vectors: Any,
        fusion_vectors: Any,
        metadata: Sequence[MetadataInput] | None = None,
        *,
        fusion_captions: Sequence[str] | None = None,
        normalize: bool = False,
        commit: bool = True,
        progress: bool | None = None,
    ) -> None:
        """Like :meth:`add`, but an id already in the index has its vectors and metadata replaced."""
        self._add(ids, multi_vectors, fusion_vectors, metadata, fusion_captions, normalize, commit, progress, True)

    def _add(
        self, ids, multi_vectors, fusion_vectors, metadata, fusion_captions, normalize, commit, progress, upsert: bool
    ) -> None:
        with self._lock:
            self._check_writable()
            item_ids = check_ids(ids, "ids")
            count = len(item_ids)
            check_fusion_vectors_given(self.captions, fusion_vectors, self.folder)
            multi_vectors, fusion_vectors = check_batch(
                count, multi_vectors, fusion_vectors, metadata, fusion_captions, self.num_queries, self.dim
            )
            if count == 0:
                return

            committed = self._store.keys_of(item_ids)
            existing = held_after_staging(item_ids, self._pending_items, committed, self._pending_deletes)
            if not upsert:
                check_not_held(item_ids, existing)

            segment_id = self._next_segment
            first_key = self._next_key
            rows: list[ItemRow] = []
            for row in range(count):
                meta = metadata[row] if metadata is not None else None
                caption = fusion_captions[row] if fusion_captions is not None else None
                rows.append(item_row(first_key + row, item_ids[row], segment_id, row, meta, caption))

            shape = (self.num_queries, self.dim)
            write_segment(self.folder, segment_id, item_ids, multi_vectors, fusion_vectors, normalize, progress, *shape)

            # The files are on disk; only now does the staged state change.
            self._next_segment += 1
            self._next_key += count
            self._pending_segments.append((segment_id, count))
            for item_id in existing:
                if self._pending_items.pop(item_id, None) is None:
                    self._pending_deletes.add(committed[item_id])
            for new_row in rows:
                self._pending_items[new_row.item_id] = new_row
            if commit:
                self.commit()

    def delete(self, ids: Sequence[str], *, commit: bool = True) -> None:
        """Delete items. An id the index does not hold raises :class:`UnknownItemError` and
        nothing is deleted."""
        with self._lock:
            self._check_writable()
            item_ids = check_ids(ids, "ids")
            committed = self._store.keys_of(item_ids)
            held = held_after_staging(item_ids, self._pending_items, committed, self._pending_deletes)
            check_all_held(item_ids, held, f"the index at {self.folder}")
            for item_id in item_ids:
                if self._pending_items.pop(item_id, None) is None:
                    self._pending_deletes.add(committed[item_id])
            if commit:
                self.commit()

    def rollback(self) -> None:
        """Discard uncommitted changes."""
        with self._lock:
            if self.read_only or self._snapshot is None:
                return
            for segment_id, _rows in self._pending_segments:
                remove_segment_files(self.folder, segment_id)
            self._reset_pending()

    def commit(self) -> int:
        """Make staged changes durable and visible; returns the new generation (or the current
        one if nothing was staged). On failure the previous generation stays committed and the
        staged changes stay staged. The steps and why they are crash-safe: generations.py."""
        with self._lock:
            self._check_writable()
            if not self.has_pending_changes:
                return self._snapshot.manifest.generation
            deleted = np.array(sorted(self._pending_deletes), dtype=np.int64)
            new_rows = sorted(self._pending_items.values(), key=lambda pending: pending.key)
            try:
                self._snapshot = commit_generation(
                    self.folder, self._store, self._snapshot, self._ann_config, self._pending_segments, new_rows,
                    deleted, self._next_key, self._next_segment, self.num_queries, self.dim)
            except BaseException:
                # The in-memory FAISS index may hold half the changes: reload the committed state.
                self._snapshot = self._load_snapshot()
                raise
            self._pending_segments = []
            self._pending_items = {}
            self._pending_deletes = set()
            self._remove_stale_files()
            return self._snapshot.manifest.generation

    def _remove_stale_files(self) -> None:
        remove_stale_files(self.folder, self._snapshot.manifest, self._pending_segments)

    def compact(self) -> int:
        """Rewrite all live vectors into one new segment, dropping deleted rows and merging the
        segments of many small commits, and write the FAISS index as one new base file (merging its
        deltas, dropping deleted items' vectors). Reads and writes every live item's vectors once."""
        with self._lock:
            self._check_writable()
            if self.has_pending_changes:
                raise CatalogueIndexError("commit() or rollback() the staged changes before compacting")
            compacted = compact_generation(self.folder, self._store, self._snapshot, self._next_key,
                                           self._next_segment, self.num_queries, self.dim)
            if compacted is None:
                return self._snapshot.manifest.generation
            self._snapshot = compacted
            self._next_segment = compacted.manifest.next_segment
            self._remove_stale_files()
            return compacted.manifest.generation

    def rebuild_ann(
        self,
        ann: str | None = None,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        fused_weight: float | None = None,
    ) -> int:
        """Rebuild the FAISS indexes over every live item's stored vectors, optionally with other
        settings, and commit them. Use it to (re)train the IVF after the catalogue grew or its
        distribution moved (new items are assigned to the centroids trained earlier). Below the
        training size the rebuilt stage is exact (flat)."""
        with self._lock:
            self._check_writable()
            if self.has_pending_changes:
                raise CatalogueIndexError("commit() or rollback() the staged changes before rebuilding the ANN index")
            current = self._ann_config
            if fused_weight and not self.captions:
                raise no_captions_error(self.folder)
            config = check_ann_config(
                ann if ann is not None else current.kind,
                nlist if nlist is not None else current.nlist,
                nprobe if nprobe is not None else current.nprobe,
                pq_m if pq_m is not None else current.pq_m,
                self.dim,
                fused_weight if fused_weight is not None else current.fused_weight,
            )
            self._snapshot = rebuild_generation(self.folder, self._store, self._snapshot, config, self._next_key,
                                                self._next_segment, self.dim)
            self._ann_config = config
            self._remove_stale_files()
            return self._snapshot.manifest.generation

    # -- search ------------------------------------------------------------------------------

    def search(
        self,
        query: Any,
        top_k: int = 10,
        *,
        candidates: int | None = None,
        fusion_weight: float = 0.0,
        category: str | None = None,
        exact: bool = False,
        nprobe: int | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """The ``top_k`` items by ``max_q <e, Z_q> + fusion_weight * <e, Z_C>``, best first.

        query: one vector (dim,) -> a list of hits, or (Q, dim) -> one list per query. Scores are
        plain inner products, so an unnormalised query scales them.
        candidates: how many items the ANN stage proposes for exact re-ranking; default
        ``settings.SEARCH.candidates_for(top_k)``, ``max(800, 10 * top_k)``; raise it for catalogues
        with many near-duplicates.
        exact: skip the ANN stage and score every item (the reference; fine for small catalogues).
        category: only items of this category. nprobe: IVF lists to visit (default: the index's
        setting). fusion_weight: 1 is the paper's CIR scoring. The candidate stage searches the
        fused vectors when ``fusion_weight`` equals the index's ``fused_weight``; at any other
        weight it does not see the fusion term (an item that only the fusion term lifts is found
        if it is a candidate).
        """
        request = check_search(query, self.dim, top_k, candidates, fusion_weight, nprobe, category,
                               captions=self.captions, folder=self.folder)
        with self._lock:
            # A reader may see a writer commit between scoring and fetching metadata; then the
            # search is repeated on the new generation.
            for _attempt in range(5):
                self._refresh_if_stale()
                snap = self._snapshot
                code = category_code(snap, request.category)
                if exact:
                    results = search_exact(snap, request.queries, request.top_k, request.fusion_weight, code)
                else:
                    results = search_ann(snap, request.queries, request.top_k, request.candidates,
                                         request.fusion_weight, code, request.nprobe or self._ann_config.nprobe)
                hits = attach_metadata(self._store, snap, results)
                if hits is not None:
                    return hits[0] if request.single else hits
            raise CatalogueIndexError(f"{self.folder} kept changing during the search")
