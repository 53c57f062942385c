"""A catalogue index for multi-vector (max-sim) retrieval, independent of the model.

The model represents each catalogue image as Z, ``num_queries`` (32) L2-normalised vectors of
``dim`` (256), and a text or composed query as one vector e. An item's score for a query is
max-sim, ``max_q <e, Z_q>``; composed retrieval adds caption fusion, ``+ w * <e, Z_C>``, where
Z_C is the text embedding of the caption the model generated for the item (stored with it).

Search runs in two stages. A FAISS index over one pooled vector per item (the mean of its 32
vectors, re-normalised) proposes ``candidates`` items; their exact max-sim (+ fusion) scores are
then computed from the stored multi-vectors and the best ``top_k`` returned. ``exact=True`` scores
every item instead, in memory-bounded chunks.

Layout of an index folder::

    catalogue.sqlite            metadata, config and the manifest (see store.py)
    writer.lock                 flock-ed by the one process that may write
    vectors/seg-000007.multi.npy    (rows, num_queries, dim) float16, memory-mapped
    vectors/seg-000007.fusion.npy   (rows, dim) float16, memory-mapped
    vectors/seg-000007.pooled.npy   (rows, dim) float32, for (re)building the ANN index
    ann/ann-g000012.faiss       the FAISS index of generation 12

Vectors live in immutable *segments*: each ``add`` writes one new segment, so committing never
rewrites the (large) multi-vectors of earlier items. Deleted items leave dead rows behind, which
:meth:`CatalogueIndex.compact` drops. The FAISS index (about 1 KiB per item when flat) is
rewritten whole at each commit, under a new name.

Crash safety. ``commit`` (1) writes and fsyncs the new segment files (``add`` already did) and the
new FAISS file under names no committed manifest refers to, then (2) changes the item rows and
the manifest in one SQLite transaction. The transaction is the switch: if the process dies before
it, the previous generation is intact and the new files are orphans, which the next commit
deletes; after it, the new generation is complete on disk. Readers open whatever the manifest
names, and because the manifest and the item rows change together, metadata and vectors agree.
Files are only ever deleted once no manifest names them; a reader in another process that still
maps them keeps reading them (POSIX unlink semantics).

Concurrency. One writer at a time (an flock on ``writer.lock``), any number of read-only openers
in other processes; they notice a new generation at their next call and reload. Within one
process an instance is thread-safe; its calls are serialised.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from unifashion.data.records import ItemRecord
from unifashion.index.store import (
    DATABASE_NAME,
    ItemMetadata,
    ItemRow,
    Layout,
    Manifest,
    MetadataStore,
)

ANN_KINDS = ("flat", "ivf", "ivfpq")

VECTORS_DIR = "vectors"
ANN_DIR = "ann"
LOCK_NAME = "writer.lock"

# Items written per step of ``add`` (4096 x 16 KiB = 64 MiB of fp16 multi-vectors).
_WRITE_CHUNK = 4096
# Items scored per step of an exact search: small enough that the converted float32 block
# (256 x 32 x 256 x 4 B = 8 MiB) stays near the cache (3.8 us/item here against 5.2 at 512).
_SCORE_CHUNK = 256
# Items the ANN stage proposes for re-ranking unless told otherwise. Re-ranking costs ~6 us per
# candidate here; on clustered benchmarks (benchmarks/results/index.md) 100 candidates gave
# recall@10 0.85 (0.36 with ~500 near-duplicates per cluster), 400 gave 0.94 (0.89) for ~2 ms more.
_DEFAULT_CANDIDATES = 400
# Up to this many queries, inner products run as one einsum per query instead of a BLAS matmul.
_EINSUM_MAX_QUERIES = 4
# Queries scored together in an exact search, bounding the (items x queries) score block.
_QUERY_BLOCK = 256
# How far from 1 a vector's norm may be before ``add`` calls it not normalised. fp16 model
# outputs are off by ~1e-3.
_NORM_TOLERANCE = 1e-2
# ``add`` shows a progress bar from this many items (unless told otherwise).
_PROGRESS_MIN_ITEMS = 10_000
# Below this many queries a FAISS search runs on one thread (see _faiss_threads).
_FAISS_SINGLE_THREAD_QUERIES = 20
# FAISS recommends at least 39 training points per centroid.
_TRAIN_POINTS_PER_CENTROID = 39
_PQ_CENTROIDS = 256  # 8-bit product-quantiser codes

# fp16 storage flushes values below fp16's smallest normal number (2^-14 ~ 6.1e-5) to zero; the
# bit trick of _fp16_as_scaled_f32 then never produces denormal floats, which are slow.
_FP16_MIN_NORMAL = np.float16(2.0**-14)
# _fp16_as_scaled_f32 returns values scaled by 2^-112; queries are scaled by 2^112 to undo it.
_FP16_BIAS_SCALE = np.float32(2.0**112)

#: Test hook: when set, called with a stage name ("segment_chunk_written", "segment_written",
#: "before_manifest_switch") so that crash tests can kill the process at a known point. Never
#: set in normal use.
_crash_test_pause: Callable[[str], None] | None = None


class CatalogueIndexError(Exception):
    """Base class for errors of the catalogue index."""


class DuplicateItemError(CatalogueIndexError, ValueError):
    """``add`` was given an id that the index already holds."""


class UnknownItemError(CatalogueIndexError, KeyError):
    """An id that the index does not hold."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class IndexLockedError(CatalogueIndexError):
    """Another process (or instance) has the index open for writing."""


@dataclass(frozen=True)
class Hit:
    """One search result. ``rank`` starts at 1; ``score = maxsim + fusion_weight * fusion``.

    ``fusion`` (the caption-fusion inner product) is only computed when ``fusion_weight`` is not
    0; otherwise it is 0.
    """

    item_id: str
    score: float
    rank: int
    maxsim: float
    fusion: float
    metadata: ItemMetadata

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "score": self.score,
            "rank": self.rank,
            "maxsim": self.maxsim,
            "fusion": self.fusion,
            "metadata": self.metadata.to_dict(),
        }


MetadataInput = ItemMetadata | ItemRecord | Mapping[str, Any] | None
_METADATA_KEYS = {"item_id", "category", "captions", "attributes", "image_path", "fusion_caption"}


# -- fp16 storage ----------------------------------------------------------------------------


def _to_fp16_storage(values: np.ndarray) -> np.ndarray:
    stored = values.astype(np.float16)
    stored[np.abs(stored) < _FP16_MIN_NORMAL] = 0
    return stored


def _fp16_as_scaled_f32(stored: np.ndarray) -> np.ndarray:
    """``stored.astype(float32) * 2**-112``, exactly, about 4x faster than ``astype``.

    numpy converts float16 element by element (~1 GB/s here); this moves the bits instead. An
    fp16 number is sign(1) exponent(5, bias 15) mantissa(10); shifting its low 15 bits left by
    13 places them as exponent and mantissa of a float32 whose exponent is read with bias 127,
    i.e. the value times 2^(15-127). Sign-extending to int32 puts the sign in bit 31 (and junk in
    bits 28-30, masked off). Correct for normal numbers and zero; storage has no subnormals
    (flushed) and no inf/NaN (rejected on add).
    """
    bits = stored.view(np.int16).astype(np.int32)
    bits <<= 13
    bits &= np.int32(-0x70002000)  # 0x8FFFE000: the sign bit and the 15 shifted bits
    return bits.view(np.float32)


def _inner_products(vectors: np.ndarray, scaled_queries: np.ndarray) -> np.ndarray:
    """(n, dim) @ (dim, Q) -> (n, Q).

    For a few queries this is a matrix-vector product, for which numpy's BLAS wakes its worker
    threads; on a busy 2-core machine that costs ~8 ms per call (measured here), 20x the product
    itself. einsum computes it on the calling thread (0.5 ms for 16k x 256).
    """
    if scaled_queries.shape[1] <= _EINSUM_MAX_QUERIES:
        columns = [np.einsum("nd,d->n", vectors, np.ascontiguousarray(q)) for q in scaled_queries.T]
        return np.stack(columns, axis=1)
    return vectors @ scaled_queries


def _maxsim_block(stored_multi: np.ndarray, scaled_queries: np.ndarray) -> np.ndarray:
    """Max-sim of a block of stored items against queries.

    stored_multi: (n, num_queries, dim) float16; scaled_queries: (dim, Q) float32, unit queries
    times 2^112. Returns (n, Q) of ``max_q <unit query, Z_q>``.
    """
    n, num_queries, dim = stored_multi.shape
    vectors = _fp16_as_scaled_f32(np.ascontiguousarray(stored_multi)).reshape(n * num_queries, dim)
    return _inner_products(vectors, scaled_queries).reshape(n, num_queries, -1).max(axis=1)


def _fusion_block(stored_fusion: np.ndarray, scaled_queries: np.ndarray) -> np.ndarray:
    """(n, Q) inner products of stored fusion vectors (n, dim) with scaled unit queries."""
    return _inner_products(_fp16_as_scaled_f32(np.ascontiguousarray(stored_fusion)), scaled_queries)


@contextmanager
def _faiss_threads(count: int) -> Iterator[None]:
    """Run FAISS calls made from this thread on ``count`` OpenMP threads, then restore.

    A search for a few queries gains nothing from FAISS's worker threads, but waking them costs
    milliseconds when the cores are busy, and their spin-waiting afterwards slows numpy's BLAS
    threads (measured here on 2 cores: 8 ms vs 0.9 ms per single-query search over 10k items).
    OpenMP's thread count is per calling thread, so this does not affect other threads.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


# -- files -----------------------------------------------------------------------------------


def _segment_paths(folder: Path, segment_id: int) -> dict[str, Path]:
    stem = folder / VECTORS_DIR / f"seg-{segment_id:06d}"
    return {part: stem.with_name(f"{stem.name}.{part}.npy") for part in ("multi", "fusion", "pooled")}


def _ann_file_name(generation: int) -> str:
    return f"ann-g{generation:06d}.faiss"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_npy_for_writing(path: Path, dtype: np.dtype, shape: tuple[int, ...]):
    """Open a .npy file whose rows the caller then writes in order (streaming, no big buffer)."""
    handle = open(path, "wb")  # noqa: SIM115 - closed by the caller
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(handle, header)
    return handle


class _SegmentWriter:
    """Streams one new segment's three .npy files row block by row block.

    ``finish`` flushes and fsyncs them (and the folder); ``abort`` deletes them. Either way no
    committed manifest names them yet: they become part of the index only at commit.
    """

    def __init__(self, folder: Path, segment_id: int, count: int, num_queries: int, dim: int):
        self.folder = folder
        self.paths = _segment_paths(folder, segment_id)
        self.shapes = {"multi": (num_queries, dim), "fusion": (dim,), "pooled": (dim,)}
        self.dtypes = {"multi": np.float16, "fusion": np.float16, "pooled": np.float32}
        self.handles = {}
        try:
            for part, path in self.paths.items():
                path.unlink(missing_ok=True)  # an orphan of a crashed writer may hold this name
                self.handles[part] = _open_npy_for_writing(path, self.dtypes[part], (count, *self.shapes[part]))
        except BaseException:
            self.abort()
            raise

    def write(self, part: str, block: np.ndarray) -> None:
        assert block.dtype == self.dtypes[part] and block.shape[1:] == self.shapes[part]
        self.handles[part].write(np.ascontiguousarray(block).tobytes())

    def finish(self) -> None:
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        _fsync_path(self.folder / VECTORS_DIR)

    def abort(self) -> None:
        for handle in self.handles.values():
            handle.close()
        for path in self.paths.values():
            path.unlink(missing_ok=True)


@dataclass
class _Segment:
    """One immutable segment's memory-mapped files."""

    segment_id: int
    multi: np.ndarray  # (rows, num_queries, dim) float16
    fusion: np.ndarray  # (rows, dim) float16
    pooled: np.ndarray  # (rows, dim) float32

    @property
    def rows(self) -> int:
        return self.multi.shape[0]


def _open_segment(folder: Path, segment_id: int, rows: int, num_queries: int, dim: int) -> _Segment:
    paths = _segment_paths(folder, segment_id)
    arrays = {}
    expected = {"multi": (rows, num_queries, dim), "fusion": (rows, dim), "pooled": (rows, dim)}
    for part, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"vector file missing: {path}")
        arrays[part] = np.load(path, mmap_mode="r")
        if arrays[part].shape != expected[part]:
            raise ValueError(f"{path} has shape {arrays[part].shape}, the manifest expects {expected[part]}")
    return _Segment(segment_id, arrays["multi"], arrays["fusion"], arrays["pooled"])


# -- committed state -------------------------------------------------------------------------


@dataclass
class _Snapshot:
    """Everything a search needs about one committed generation. Never mutated after commit,
    except the FAISS index, which only a commit of the same instance changes (under its lock)."""

    manifest: Manifest
    layout: Layout
    segments: dict[int, _Segment]
    ann: Any  # faiss.Index whose ids are item keys
    key_category: np.ndarray  # int32 code per live item, aligned with layout.keys
    category_names: list[str]
    category_codes: dict[str, int]
    # Per segment, the key (or -1 for a dead row) and the category code of each row: the exact
    # scan walks segments row by row.
    row_keys: dict[int, np.ndarray]
    row_categories: dict[int, np.ndarray]
    selectors: dict[int, Any] = field(default_factory=dict)  # cached FAISS ID selectors by category

    @property
    def size(self) -> int:
        return len(self.layout.keys)

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment ids and rows of live items' keys."""
        if len(keys) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        positions = np.minimum(np.searchsorted(self.layout.keys, keys), max(self.size - 1, 0))
        if self.size == 0 or not np.array_equal(self.layout.keys[positions], keys):
            raise CatalogueIndexError("the FAISS index names items that the metadata does not hold")
        return self.layout.segments[positions], self.layout.rows[positions]


def _by_segment(segment_ids: np.ndarray, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Group items by segment: (segment id, positions of its items ordered by row) per segment.

    One sort instead of a pass per segment (an index may hold thousands of small segments), and
    row order makes each memory-mapped read sequential.
    """
    if len(segment_ids) == 0:
        return []
    order = np.lexsort((rows, segment_ids))
    boundaries = np.flatnonzero(np.diff(segment_ids[order])) + 1
    return [(int(segment_ids[group[0]]), group) for group in np.split(order, boundaries)]


def _make_snapshot(manifest: Manifest, layout: Layout, segments: dict[int, _Segment], ann: Any) -> _Snapshot:
    names, codes = np.unique(layout.categories.astype(str), return_inverse=True)
    codes = codes.astype(np.int32).reshape(-1)
    row_keys = {sid: np.full(seg.rows, -1, dtype=np.int64) for sid, seg in segments.items()}
    row_categories = {sid: np.full(seg.rows, -1, dtype=np.int32) for sid, seg in segments.items()}
    for sid, members in _by_segment(layout.segments, layout.rows):
        row_keys[sid][layout.rows[members]] = layout.keys[members]
        row_categories[sid][layout.rows[members]] = codes[members]
    names = [str(n) for n in names]
    return _Snapshot(
        manifest=manifest,
        layout=layout,
        segments=segments,
        ann=ann,
        key_category=codes,
        category_names=names,
        category_codes={n: i for i, n in enumerate(names)},
        row_keys=row_keys,
        row_categories=row_categories,
    )


@dataclass(frozen=True)
class _AnnConfig:
    kind: str
    nlist: int
    nprobe: int
    pq_m: int

    def min_train_items(self) -> int:
        """Live items needed before this ANN kind can be trained (0 for flat)."""
        if self.kind == "flat":
            return 0
        needed = _TRAIN_POINTS_PER_CENTROID * self.nlist
        if self.kind == "ivfpq":
            needed = max(needed, _TRAIN_POINTS_PER_CENTROID * _PQ_CENTROIDS)
        return needed


def _check_ann_config(kind: str, nlist: int, nprobe: int, pq_m: int, dim: int) -> _AnnConfig:
    if kind not in ANN_KINDS:
        raise ValueError(f"unknown ANN kind {kind!r}; choose one of {', '.join(ANN_KINDS)}")
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("pq_m", pq_m)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if kind == "ivfpq" and dim % pq_m:
        raise ValueError(f"pq_m={pq_m} must divide the vector dimension {dim}")
    return _AnnConfig(kind, int(nlist), int(nprobe), int(pq_m))


class CatalogueIndex:
    """Storage and max-sim search of a catalogue's multi-vectors, metadata and caption vectors.

    Make one with :meth:`create`, reopen it with :meth:`open`. ``add`` / ``upsert`` / ``delete``
    stage changes and, by default, commit them at once; pass ``commit=False`` to group several
    calls into one :meth:`commit` (cheaper: each commit rewrites the FAISS file). Uncommitted
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
        self._ann_config = _AnnConfig(config["ann"], config["nlist"], config["nprobe"], config["pq_m"])
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
        ann: str = "flat",
        nlist: int = 1024,
        nprobe: int = 16,
        pq_m: int = 32,
    ) -> CatalogueIndex:
        """Create an empty index in folder ``path`` (new or empty) and open it for writing.

        ``ann`` picks the FAISS index over pooled vectors: ``"flat"`` (exact inner product;
        ~1 KiB/item), ``"ivf"`` (IndexIVFFlat with ``nlist`` lists, ``nprobe`` searched) or
        ``"ivfpq"`` (IndexIVFPQ with ``pq_m`` 8-bit sub-quantisers, ~``pq_m`` B/item). An IVF kind
        is trained on the stored pooled vectors at the first commit where the index holds enough
        items (39 per list); until then the ANN stage is flat. See :meth:`rebuild_ann`.
        """
        folder = Path(path)
        for name, value in (("dim", dim), ("num_queries", num_queries)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        ann_config = _check_ann_config(ann, nlist, nprobe, pq_m, dim)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(
                f"{folder} exists and is not an empty folder; use CatalogueIndex.open to reopen an index"
            )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / VECTORS_DIR).mkdir()
        (folder / ANN_DIR).mkdir()
        config = {
            "dim": int(dim),
            "num_queries": int(num_queries),
            "ann": ann_config.kind,
            "nlist": ann_config.nlist,
            "nprobe": ann_config.nprobe,
            "pq_m": ann_config.pq_m,
        }
        MetadataStore.create(folder, config)
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

    def _load_snapshot(self) -> _Snapshot:
        # A writer may commit (and delete the previous generation's files) between our reading
        # the manifest and opening its files; then the files are gone but a newer manifest
        # exists, so read again.
        for _attempt in range(10):
            manifest, layout = self._store.read_committed()
            try:
                segments = {
                    sid: _open_segment(self.folder, sid, rows, self.num_queries, self.dim)
                    for sid, rows in manifest.segments
                }
                if manifest.ann_file:
                    ann_path = self.folder / ANN_DIR / manifest.ann_file
                    if not ann_path.is_file():
                        raise FileNotFoundError(f"ANN file missing: {ann_path}")
                    try:
                        ann = faiss.read_index(str(ann_path))
                    except RuntimeError as exc:  # FAISS's error when the file vanished after the check
                        if not ann_path.is_file():
                            raise FileNotFoundError(f"ANN file missing: {ann_path}") from exc
                        raise
                else:
                    ann = self._new_ann(_AnnConfig("flat", 1, 1, 1))
            except FileNotFoundError:
                if self._store.generation() != manifest.generation:
                    continue
                raise
            return _make_snapshot(manifest, layout, segments, ann)
        raise CatalogueIndexError(f"{self.folder} kept changing while being opened")

    def _refresh_if_stale(self) -> None:
        """Readers pick up generations that a writer committed since they last looked."""
        if self._snapshot is None:
            raise CatalogueIndexError("the index is closed")
        # A writer holds the lock: nobody else can commit, so its snapshot is always current.
        if self.read_only and self._store.generation() != self._snapshot.manifest.generation:
            self._snapshot = self._load_snapshot()
            config = self._store.config()  # rebuild_ann may have changed the ANN settings
            self._ann_config = _AnnConfig(config["ann"], config["nlist"], config["nprobe"], config["pq_m"])

    # -- inspection --------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The committed generation this instance sees (bumped by every commit)."""
        with self._lock:
            self._refresh_if_stale()
            return self._snapshot.manifest.generation

    @property
    def ann_kind(self) -> str:
        """The FAISS index actually built: "flat" until an IVF kind has been trained."""
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
            sizes = {"multi": 0, "fusion": 0, "pooled": 0}
            for sid in snap.segments:
                for part, path in _segment_paths(self.folder, sid).items():
                    sizes[part] += path.stat().st_size
            ann_bytes = (self.folder / ANN_DIR / snap.manifest.ann_file).stat().st_size if snap.manifest.ann_file else 0
            database_bytes = sum(p.stat().st_size for p in self.folder.iterdir() if p.name.startswith(DATABASE_NAME))
            return {
                "items": snap.size,
                "generation": snap.manifest.generation,
                "segments": len(snap.segments),
                "dead_rows": segment_rows - snap.size,
                "ann_kind": snap.manifest.ann_kind,
                "ann_config": {
                    "kind": self._ann_config.kind,
                    "nlist": self._ann_config.nlist,
                    "nprobe": self._ann_config.nprobe,
                    "pq_m": self._ann_config.pq_m,
                },
                "dim": self.dim,
                "num_queries": self.num_queries,
                "bytes": {
                    "multi_vectors": sizes["multi"],
                    "fusion_vectors": sizes["fusion"],
                    "pooled_vectors": sizes["pooled"],
                    "ann": ann_bytes,
                    "metadata": database_bytes,
                },
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
        (N, dim), the embeddings of the items' generated captions, L2-normalised. metadata: per
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
            item_ids = _check_ids(ids, "ids")
            count = len(item_ids)
            multi_vectors = _as_float_array(multi_vectors, "multi_vectors")
            fusion_vectors = _as_float_array(fusion_vectors, "fusion_vectors")
            expected_multi = (count, self.num_queries, self.dim)
            if tuple(multi_vectors.shape) != expected_multi:
                raise ValueError(
                    f"multi_vectors must have shape (items, num_queries, dim) = {expected_multi}, "
                    f"got {tuple(multi_vectors.shape)}"
                )
            if tuple(fusion_vectors.shape) != (count, self.dim):
                raise ValueError(
                    f"fusion_vectors must have shape (items, dim) = {(count, self.dim)}, "
                    f"got {tuple(fusion_vectors.shape)}"
                )
            if metadata is not None and len(metadata) != count:
                raise ValueError(f"{len(metadata)} metadata entries for {count} ids")
            if fusion_captions is not None and len(fusion_captions) != count:
                raise ValueError(f"{len(fusion_captions)} fusion captions for {count} ids")
            if count == 0:
                return

            # Which ids exist, committed (and not deleted in this batch of changes) or staged.
            committed = self._store.keys_of(item_ids)
            existing = [
                item_id
                for item_id in item_ids
                if item_id in self._pending_items
                or (item_id in committed and committed[item_id] not in self._pending_deletes)
            ]
            if existing and not upsert:
                shown = ", ".join(repr(i) for i in existing[:5]) + (" ..." if len(existing) > 5 else "")
                raise DuplicateItemError(
                    f"{len(existing)} of the ids are already in the index: {shown}; use upsert() to replace them"
                )

            segment_id = self._next_segment
            first_key = self._next_key
            rows: list[ItemRow] = []
            for row in range(count):
                meta = metadata[row] if metadata is not None else None
                caption = fusion_captions[row] if fusion_captions is not None else None
                rows.append(_item_row(first_key + row, item_ids[row], segment_id, row, meta, caption))

            self._write_segment(segment_id, item_ids, multi_vectors, fusion_vectors, normalize, progress)

            # The files are on disk; only now does the staged state change.
            self._next_segment += 1
            self._next_key += count
            self._pending_segments.append((segment_id, count))
            for item_id in existing:
                if self._pending_items.pop(item_id, None) is None:
                    self._pending_deletes.add(committed[item_id])
            for item_row in rows:
                self._pending_items[item_row[1]] = item_row
            if commit:
                self.commit()

    def _write_segment(
        self,
        segment_id: int,
        item_ids: list[str],
        multi_vectors: Any,
        fusion_vectors: Any,
        normalize: bool,
        progress: bool | None,
    ) -> None:
        """Validate and write one segment's three files, chunk by chunk, and fsync them."""
        count = len(item_ids)
        show = count >= _PROGRESS_MIN_ITEMS if progress is None else progress
        writer = _SegmentWriter(self.folder, segment_id, count, self.num_queries, self.dim)
        try:
            with tqdm(total=count, unit="item", desc="indexing", disable=not show) as bar:
                for start in range(0, count, _WRITE_CHUNK):
                    stop = min(start + _WRITE_CHUNK, count)
                    multi = np.array(multi_vectors[start:stop], dtype=np.float32)
                    fusion = np.array(fusion_vectors[start:stop], dtype=np.float32)
                    _check_vectors(multi, "multi_vectors", item_ids, start, normalize)
                    _check_vectors(fusion[:, None, :], "fusion_vectors", item_ids, start, normalize)
                    if normalize:
                        multi /= np.linalg.norm(multi, axis=-1, keepdims=True)
                        fusion /= np.linalg.norm(fusion, axis=-1, keepdims=True)
                    pooled = multi.mean(axis=1)
                    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                    # 32 unit vectors averaging to ~0 is pathological; keep the raw mean then.
                    pooled /= np.where(norms > 1e-6, norms, 1.0)
                    writer.write("multi", _to_fp16_storage(multi))
                    writer.write("fusion", _to_fp16_storage(fusion))
                    writer.write("pooled", pooled.astype(np.float32))
                    bar.update(stop - start)
                    if _crash_test_pause is not None:
                        _crash_test_pause("segment_chunk_written")
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        if _crash_test_pause is not None:
            _crash_test_pause("segment_written")

    def delete(self, ids: Sequence[str], *, commit: bool = True) -> None:
        """Delete items. An id the index does not hold raises :class:`UnknownItemError` and
        nothing is deleted."""
        with self._lock:
            self._check_writable()
            item_ids = _check_ids(ids, "ids")
            committed = self._store.keys_of(item_ids)
            unknown = [
                item_id
                for item_id in item_ids
                if item_id not in self._pending_items
                and (item_id not in committed or committed[item_id] in self._pending_deletes)
            ]
            if unknown:
                shown = ", ".join(repr(i) for i in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
                raise UnknownItemError(f"cannot delete {len(unknown)} id(s) not in the index at {self.folder}: {shown}")
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
                for path in _segment_paths(self.folder, segment_id).values():
                    path.unlink(missing_ok=True)
            self._reset_pending()

    def commit(self) -> int:
        """Make staged changes durable and visible; returns the new generation (or the current
        one if nothing was staged). On failure the previous generation stays committed and the
        staged changes stay staged."""
        with self._lock:
            self._check_writable()
            if not self.has_pending_changes:
                return self._snapshot.manifest.generation
            snap = self._snapshot
            generation = snap.manifest.generation + 1
            deleted = np.array(sorted(self._pending_deletes), dtype=np.int64)
            new_rows = sorted(self._pending_items.values())
            # The live items after this commit: the committed ones not deleted, plus the staged.
            keep = ~np.isin(snap.layout.keys, deleted)
            layout = Layout(
                keys=np.concatenate([snap.layout.keys[keep], np.array([r[0] for r in new_rows], dtype=np.int64)]),
                segments=np.concatenate(
                    [snap.layout.segments[keep], np.array([r[2] for r in new_rows], dtype=np.int64)]
                ),
                rows=np.concatenate([snap.layout.rows[keep], np.array([r[3] for r in new_rows], dtype=np.int64)]),
                categories=np.concatenate(
                    [snap.layout.categories[keep], np.array([r[4] for r in new_rows], dtype=object)]
                ),
            )
            live_segments = set(np.unique(layout.segments).tolist())
            segment_list = tuple(
                (sid, rows) for sid, rows in (*snap.manifest.segments, *self._pending_segments) if sid in live_segments
            )
            try:
                segments = {sid: seg for sid, seg in snap.segments.items() if sid in live_segments}
                for sid, rows in self._pending_segments:
                    if sid in live_segments:
                        segments[sid] = _open_segment(self.folder, sid, rows, self.num_queries, self.dim)

                config = self._ann_config
                train_now = (
                    config.kind != "flat"
                    and snap.manifest.ann_kind == "flat"
                    and len(layout.keys) >= config.min_train_items()
                )
                if train_now:
                    ann = self._build_ann(config, layout, segments)
                    ann_kind = config.kind
                else:
                    # Update the current index in place; on failure it is reloaded from disk below.
                    ann = snap.ann
                    ann_kind = snap.manifest.ann_kind
                    if len(deleted):
                        ann.remove_ids(deleted)
                    kept = int(keep.sum())  # the staged items follow the kept ones in the layout
                    self._add_pooled(ann, layout.keys[kept:], layout.segments[kept:], layout.rows[kept:], segments)

                manifest = Manifest(
                    generation=generation,
                    segments=segment_list,
                    ann_file=self._write_ann(ann, generation),
                    ann_kind=ann_kind,
                    next_key=self._next_key,
                    next_segment=self._next_segment,
                )
                if _crash_test_pause is not None:
                    _crash_test_pause("before_manifest_switch")
                self._store.apply(manifest, deleted_keys=deleted.tolist(), new_rows=new_rows)
            except BaseException:
                # The in-memory FAISS index may hold half the changes: reload the committed state.
                self._snapshot = self._load_snapshot()
                raise
            self._snapshot = _make_snapshot(manifest, layout, segments, ann)
            self._pending_segments = []
            self._pending_items = {}
            self._pending_deletes = set()
            self._remove_stale_files()
            return generation

    def _add_pooled(
        self, ann: Any, keys: np.ndarray, segment_ids: np.ndarray, rows: np.ndarray, segments: dict[int, _Segment]
    ) -> None:
        """Add the pooled vectors of the given items to a FAISS index, segment by segment."""
        for sid, members in _by_segment(segment_ids, rows):
            for start in range(0, len(members), _WRITE_CHUNK * 4):
                part = members[start : start + _WRITE_CHUNK * 4]
                pooled = np.ascontiguousarray(segments[sid].pooled[rows[part]], dtype=np.float32)
                ann.add_with_ids(pooled, keys[part])

    def _new_ann(self, config: _AnnConfig) -> Any:
        """An empty FAISS index of ``config``'s kind; IVF kinds still need training."""
        if config.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        quantizer = faiss.IndexFlatIP(self.dim)
        if config.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, self.dim, config.nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, self.dim, config.nlist, config.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = config.nprobe
        return index

    def _build_ann(self, config: _AnnConfig, layout: Layout, segments: dict[int, _Segment]) -> Any:
        """A FAISS index of ``config``'s kind over every live item, trained on their pooled vectors."""
        ann = self._new_ann(config)
        if config.kind != "flat":
            # FAISS's k-means samples 256 points per centroid; PQ wants 256 per code too.
            sample_size = min(len(layout.keys), max(256 * config.nlist, 256 * _PQ_CENTROIDS))
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(len(layout.keys), size=sample_size, replace=False))
            training = np.empty((sample_size, self.dim), dtype=np.float32)
            sample_rows = layout.rows[sample]
            for sid, members in _by_segment(layout.segments[sample], sample_rows):
                training[members] = segments[sid].pooled[sample_rows[members]]
            ann.train(training)
        self._add_pooled(ann, layout.keys, layout.segments, layout.rows, segments)
        return ann

    def _write_ann(self, ann: Any, generation: int) -> str:
        name = _ann_file_name(generation)
        path = self.folder / ANN_DIR / name
        path.unlink(missing_ok=True)  # an orphan of a crashed commit
        faiss.write_index(ann, str(path))
        _fsync_path(path)
        _fsync_path(self.folder / ANN_DIR)
        return name

    def _remove_stale_files(self) -> None:
        """Delete vector and FAISS files that neither the manifest nor staged changes name:
        superseded generations and the leftovers of crashed writers."""
        manifest = self._snapshot.manifest
        wanted = {self.folder / ANN_DIR / manifest.ann_file} if manifest.ann_file else set()
        for sid, _rows in (*manifest.segments, *self._pending_segments):
            wanted.update(_segment_paths(self.folder, sid).values())
        for sub in (VECTORS_DIR, ANN_DIR):
            for path in (self.folder / sub).iterdir():
                if path not in wanted:
                    path.unlink(missing_ok=True)

    def compact(self) -> int:
        """Rewrite all live vectors into one new segment, dropping deleted rows and merging the
        segments of many small commits. Reads and writes every live item's vectors once."""
        with self._lock:
            self._check_writable()
            if self.has_pending_changes:
                raise CatalogueIndexError("commit() or rollback() the staged changes before compacting")
            snap = self._snapshot
            count = snap.size
            if count == 0 or (len(snap.segments) == 1 and snap.size == next(iter(snap.segments.values())).rows):
                return snap.manifest.generation
            segment_id = self._next_segment
            writer = _SegmentWriter(self.folder, segment_id, count, self.num_queries, self.dim)
            try:
                for start in range(0, count, _WRITE_CHUNK):
                    stop = min(start + _WRITE_CHUNK, count)
                    rows = snap.layout.rows[start:stop]
                    groups = _by_segment(snap.layout.segments[start:stop], rows)
                    for part in ("multi", "fusion", "pooled"):
                        block = np.empty((stop - start, *writer.shapes[part]), dtype=writer.dtypes[part])
                        for sid, members in groups:
                            block[members] = getattr(snap.segments[sid], part)[rows[members]]
                        writer.write(part, block)
                writer.finish()
                layout = Layout(
                    keys=snap.layout.keys,
                    segments=np.full(count, segment_id, dtype=np.int64),
                    rows=np.arange(count, dtype=np.int64),
                    categories=snap.layout.categories,
                )
                segments = {segment_id: _open_segment(self.folder, segment_id, count, self.num_queries, self.dim)}
                manifest = Manifest(
                    generation=snap.manifest.generation + 1,
                    segments=((segment_id, count),),
                    ann_file=snap.manifest.ann_file,  # the FAISS index is keyed by item key: unchanged
                    ann_kind=snap.manifest.ann_kind,
                    next_key=self._next_key,
                    next_segment=segment_id + 1,
                )
                moved = list(zip([segment_id] * count, range(count), snap.layout.keys.tolist(), strict=True))
                self._store.apply(manifest, moved_rows=moved)
            except BaseException:
                writer.abort()
                raise
            self._snapshot = _make_snapshot(manifest, layout, segments, snap.ann)
            self._next_segment = segment_id + 1
            self._remove_stale_files()
            return manifest.generation

    def rebuild_ann(
        self,
        ann: str | None = None,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
    ) -> int:
        """Rebuild the FAISS index over every live item's stored pooled vector, optionally as
        another kind, and commit it. Use it to (re)train an IVF after the catalogue grew or its
        distribution moved (new items are assigned to the centroids trained earlier)."""
        with self._lock:
            self._check_writable()
            if self.has_pending_changes:
                raise CatalogueIndexError("commit() or rollback() the staged changes before rebuilding the ANN index")
            current = self._ann_config
            config = _check_ann_config(
                ann if ann is not None else current.kind,
                nlist if nlist is not None else current.nlist,
                nprobe if nprobe is not None else current.nprobe,
                pq_m if pq_m is not None else current.pq_m,
                self.dim,
            )
            snap = self._snapshot
            if snap.size < config.min_train_items():
                raise ValueError(
                    f"an {config.kind} index with nlist={config.nlist} needs at least {config.min_train_items()} "
                    f"items to train, the index holds {snap.size}; use a smaller nlist or ann='flat'"
                )
            index = self._build_ann(config, snap.layout, snap.segments)
            generation = snap.manifest.generation + 1
            manifest = Manifest(
                generation=generation,
                segments=snap.manifest.segments,
                ann_file=self._write_ann(index, generation),
                ann_kind=config.kind,
                next_key=self._next_key,
                next_segment=self._next_segment,
            )
            self._store.apply(
                manifest,
                config_updates={
                    "ann": config.kind,
                    "nlist": config.nlist,
                    "nprobe": config.nprobe,
                    "pq_m": config.pq_m,
                },
            )
            self._ann_config = config
            self._snapshot = _make_snapshot(manifest, snap.layout, snap.segments, index)
            self._remove_stale_files()
            return generation

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
        candidates: how many items the ANN stage (pooled vectors) proposes for exact re-ranking;
        default ``max(400, 10 * top_k)``; raise it for catalogues with many near-duplicates.
        exact: skip the ANN stage and score every item (the reference; fine for small catalogues).
        category: only items of this category. nprobe: IVF lists to visit (default: the index's
        setting). fusion_weight: 1 is the paper's CIR scoring. The ANN stage does not see the
        fusion term: an item that only the fusion term lifts is found if it is a candidate.
        """
        queries, single = self._check_queries(query)
        if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if candidates is None:
            candidates = max(_DEFAULT_CANDIDATES, 10 * int(top_k))
        elif not isinstance(candidates, (int, np.integer)) or isinstance(candidates, bool) or candidates < top_k:
            raise ValueError(f"candidates must be an integer >= top_k ({top_k}), got {candidates!r}")
        if not isinstance(fusion_weight, (int, float, np.floating, np.integer)) or not math.isfinite(fusion_weight):
            raise ValueError(f"fusion_weight must be a finite number, got {fusion_weight!r}")
        if nprobe is not None and (not isinstance(nprobe, (int, np.integer)) or isinstance(nprobe, bool) or nprobe < 1):
            raise ValueError(f"nprobe must be a positive integer, got {nprobe!r}")
        if category is not None and not isinstance(category, str):
            raise ValueError(f"category must be a string or None, got {category!r}")

        with self._lock:
            # A reader may see a writer commit between scoring and fetching metadata; then the
            # search is repeated on the new generation.
            for _attempt in range(5):
                self._refresh_if_stale()
                snap = self._snapshot
                if category is None:
                    category_code = -1
                elif category in snap.category_codes:
                    category_code = snap.category_codes[category]
                else:
                    known = ", ".join(repr(c) for c in snap.category_names[:20])
                    raise ValueError(f"unknown category {category!r}; the index has {known}")
                if exact:
                    results = self._search_exact(snap, queries, int(top_k), float(fusion_weight), category_code)
                else:
                    results = self._search_ann(
                        snap, queries, int(top_k), int(candidates), float(fusion_weight), category_code, nprobe
                    )
                hits = self._hits(snap, results)
                if hits is not None:
                    return hits[0] if single else hits
            raise CatalogueIndexError(f"{self.folder} kept changing during the search")

    def _check_queries(self, query: Any) -> tuple[np.ndarray, bool]:
        try:
            queries = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"query must be an array of numbers: {exc}") from exc
        single = queries.ndim == 1
        if single:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim or queries.shape[0] == 0:
            raise ValueError(
                f"query must have shape ({self.dim},) or (Q, {self.dim}) with Q >= 1, got {np.shape(query)}"
            )
        bad = np.flatnonzero(~np.isfinite(queries).all(axis=1))
        if len(bad):
            raise ValueError(f"query {int(bad[0])} contains NaN or infinite values")
        zero = np.flatnonzero(~(np.abs(queries) > 0).any(axis=1))
        if len(zero):
            raise ValueError(f"query {int(zero[0])} is all zeros")
        return np.ascontiguousarray(queries), single

    @staticmethod
    def _scaled_queries(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit queries times 2^112 as (dim, Q), and the norms to multiply scores back by."""
        norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        scaled = (queries / norms[:, None].astype(np.float32)) * _FP16_BIAS_SCALE
        return np.ascontiguousarray(scaled.T, dtype=np.float32), norms

    def _search_exact(
        self, snap: _Snapshot, queries: np.ndarray, top_k: int, fusion_weight: float, category_code: int
    ) -> list[tuple[np.ndarray, ...]]:
        """Score every live item: chunked over items (bounded memory) and over queries."""
        scaled, norms = self._scaled_queries(queries)
        num = len(queries)
        best_scores = np.empty((num, 0), dtype=np.float32)
        best_maxsim = np.empty((num, 0), dtype=np.float32)
        best_fusion = np.empty((num, 0), dtype=np.float32)
        best_keys = np.empty((num, 0), dtype=np.int64)
        for sid, segment in snap.segments.items():
            live = snap.row_keys[sid] >= 0
            if category_code >= 0:
                live &= snap.row_categories[sid] == category_code
            for start in range(0, segment.rows, _SCORE_CHUNK):
                stop = min(start + _SCORE_CHUNK, segment.rows)
                chunk_live = np.flatnonzero(live[start:stop])
                if len(chunk_live) == 0:
                    continue
                maxsim = np.empty((stop - start, num), dtype=np.float32)
                multi = segment.multi[start:stop]
                for q0 in range(0, num, _QUERY_BLOCK):
                    maxsim[:, q0 : q0 + _QUERY_BLOCK] = _maxsim_block(multi, scaled[:, q0 : q0 + _QUERY_BLOCK])
                maxsim = maxsim[chunk_live].T  # (Q, live items of the chunk)
                if fusion_weight:
                    fusion = _fusion_block(segment.fusion[start:stop][chunk_live], scaled).T
                else:
                    fusion = np.zeros_like(maxsim)
                keys = np.broadcast_to(snap.row_keys[sid][start:stop][chunk_live], maxsim.shape)
                best_scores = np.concatenate([best_scores, maxsim + np.float32(fusion_weight) * fusion], axis=1)
                best_maxsim = np.concatenate([best_maxsim, maxsim], axis=1)
                best_fusion = np.concatenate([best_fusion, fusion], axis=1)
                best_keys = np.concatenate([best_keys, keys], axis=1)
                if best_scores.shape[1] > top_k:
                    keep = np.argpartition(-best_scores, top_k - 1, axis=1)[:, :top_k]
                    best_scores = np.take_along_axis(best_scores, keep, axis=1)
                    best_maxsim = np.take_along_axis(best_maxsim, keep, axis=1)
                    best_fusion = np.take_along_axis(best_fusion, keep, axis=1)
                    best_keys = np.take_along_axis(best_keys, keep, axis=1)
        return [
            _ranked(best_keys[i], best_maxsim[i], best_fusion[i], fusion_weight, norms[i], top_k) for i in range(num)
        ]

    def _search_ann(
        self,
        snap: _Snapshot,
        queries: np.ndarray,
        top_k: int,
        candidates: int,
        fusion_weight: float,
        category_code: int,
        nprobe: int | None,
    ) -> list[tuple[np.ndarray, ...]]:
        """Pooled-vector ANN for candidates, then exact max-sim (+ fusion) of those candidates."""
        population = snap.size if category_code < 0 else int(np.count_nonzero(snap.key_category == category_code))
        k = min(candidates, population)
        if k == 0:
            empty = (np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.float32), np.empty(0, np.float32))
            return [empty for _ in range(len(queries))]
        selector = None
        if category_code >= 0:
            if category_code not in snap.selectors:
                members = snap.layout.keys[snap.key_category == category_code]
                snap.selectors[category_code] = faiss.IDSelectorBatch(members)
            selector = snap.selectors[category_code]
        if snap.manifest.ann_kind == "flat":
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
        else:
            params = faiss.SearchParametersIVF(nprobe=nprobe or self._ann_config.nprobe)
            if selector is not None:
                params.sel = selector
        threads = 1 if len(queries) < _FAISS_SINGLE_THREAD_QUERIES else faiss.omp_get_max_threads()
        with _faiss_threads(threads):
            _distances, candidate_keys = snap.ann.search(queries, k, params=params)

        scaled, norms = self._scaled_queries(queries)
        results = []
        for i in range(len(queries)):
            keys = candidate_keys[i][candidate_keys[i] >= 0]
            segment_ids, rows = snap.locate(keys)
            maxsim = np.empty(len(keys), dtype=np.float32)
            fusion = np.zeros(len(keys), dtype=np.float32)
            for sid, members in _by_segment(segment_ids, rows):
                segment = snap.segments[sid]
                maxsim[members] = _maxsim_block(segment.multi[rows[members]], scaled[:, i : i + 1])[:, 0]
                if fusion_weight:
                    fusion[members] = _fusion_block(segment.fusion[rows[members]], scaled[:, i : i + 1])[:, 0]
            results.append(_ranked(keys, maxsim, fusion, fusion_weight, norms[i], top_k))
        return results

    def _hits(self, snap: _Snapshot, results: list[tuple[np.ndarray, ...]]) -> list[list[Hit]] | None:
        """Attach metadata; None if the committed generation moved on since ``snap``."""
        all_keys = {int(k) for keys, *_ in results for k in keys}
        metadata = self._store.metadata_by_key(all_keys, snap.manifest.generation)
        if metadata is None:
            return None
        hits = []
        for keys, scores, maxsim, fusion in results:
            hits.append(
                [
                    Hit(
                        item_id=metadata[int(key)].item_id,
                        score=float(scores[r]),
                        rank=r + 1,
                        maxsim=float(maxsim[r]),
                        fusion=float(fusion[r]),
                        metadata=metadata[int(key)],
                    )
                    for r, key in enumerate(keys)
                ]
            )
        return hits


def _ranked(
    keys: np.ndarray, maxsim: np.ndarray, fusion: np.ndarray, fusion_weight: float, norm: float, top_k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Un-scale scores by the query norm and order best first (ties: earlier-added item first)."""
    maxsim = (maxsim.astype(np.float64) * norm).astype(np.float32)
    fusion = (fusion.astype(np.float64) * norm).astype(np.float32)
    scores = maxsim + np.float32(fusion_weight) * fusion
    order = np.lexsort((keys, -scores))[:top_k]
    return keys[order], scores[order], maxsim[order], fusion[order]


# -- input checks ----------------------------------------------------------------------------


def _check_ids(ids: Sequence[str], name: str) -> list[str]:
    if isinstance(ids, str):
        raise ValueError(f"{name} must be a sequence of strings, got the single string {ids!r}")
    item_ids = list(ids)
    seen: set[str] = set()
    for position, item_id in enumerate(item_ids):
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"{name}[{position}] must be a non-empty string, got {item_id!r}")
        if item_id in seen:
            raise ValueError(f"{name} lists {item_id!r} more than once")
        seen.add(item_id)
    return [str(i) for i in item_ids]


def _as_float_array(values: Any, name: str) -> Any:
    """An array-like with .shape whose slices give floats; memory maps stay memory maps."""
    if not hasattr(values, "shape") or not hasattr(values, "dtype"):
        try:
            values = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be an array of numbers: {exc}") from exc
    dtype = values.dtype
    is_float = getattr(dtype, "is_floating_point", None)  # torch dtypes
    if is_float is None:
        is_float = np.issubdtype(dtype, np.floating)
    if not is_float:
        raise ValueError(f"{name} must hold floating-point numbers, got dtype {dtype}")
    return values


def _check_vectors(vectors: np.ndarray, name: str, item_ids: list[str], offset: int, normalize: bool) -> None:
    """Reject non-finite and (unless normalising) non-unit vectors, naming the first bad item.

    vectors: (n, k, dim) float32, items ``offset .. offset + n`` of the batch.
    """
    finite = np.isfinite(vectors).all(axis=(1, 2))
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{name} of item {item_ids[offset + i]!r} (position {offset + i}) contain NaN or infinite values"
        )
    norms = np.linalg.norm(vectors, axis=-1)
    if normalize:
        bad = (norms == 0).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} of item {item_ids[offset + i]!r} (position {offset + i}) has a zero vector")
    else:
        bad = (np.abs(norms - 1) > _NORM_TOLERANCE).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            worst = float(norms[i][np.argmax(np.abs(norms[i] - 1))])
            raise ValueError(
                f"{name} of item {item_ids[offset + i]!r} (position {offset + i}) are not L2-normalised "
                f"(a norm of {worst:.4g}); pass normalize=True to normalise them"
            )


def _item_row(
    key: int, item_id: str, segment: int, row: int, meta: MetadataInput, fusion_caption: str | None
) -> ItemRow:
    """The ``items`` table row of one item, from any accepted metadata form."""
    fields: dict[str, Any] = {"category": "", "captions": {}, "attributes": {}, "image_path": "", "fusion_caption": ""}
    if isinstance(meta, ItemMetadata):
        source_id = meta.item_id
        fields.update(meta.to_dict())
    elif isinstance(meta, ItemRecord):
        source_id = meta.item_id
        fields.update(category=meta.category, captions=meta.captions, attributes=meta.attributes)
        if isinstance(meta.image, (str, os.PathLike)):
            fields["image_path"] = str(meta.image)
    elif isinstance(meta, Mapping):
        unknown = set(meta) - _METADATA_KEYS
        if unknown:
            raise ValueError(
                f"metadata of item {item_id!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_METADATA_KEYS)}"
            )
        source_id = meta.get("item_id", item_id)
        fields.update({k: v for k, v in meta.items() if k != "item_id"})
    elif meta is None:
        source_id = item_id
    else:
        raise ValueError(f"metadata of item {item_id!r} must be an ItemRecord, ItemMetadata, mapping or None")
    if source_id != item_id:
        raise ValueError(f"metadata for id {item_id!r} describes item {source_id!r}")
    if fusion_caption is not None:
        fields["fusion_caption"] = fusion_caption
    for text_field in ("category", "image_path", "fusion_caption"):
        if not isinstance(fields[text_field], str):
            raise ValueError(f"{text_field} of item {item_id!r} must be a string, got {fields[text_field]!r}")
    captions = fields["captions"]
    if not isinstance(captions, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in captions.items()
    ):
        raise ValueError(f"captions of item {item_id!r} must map caption style to text, got {captions!r}")
    if not isinstance(fields["attributes"], Mapping):
        raise ValueError(f"attributes of item {item_id!r} must be a mapping, got {fields['attributes']!r}")
    try:
        attributes_json = json.dumps(dict(fields["attributes"]), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attributes of item {item_id!r} are not JSON-serialisable: {exc}") from exc
    return (
        key,
        item_id,
        segment,
        row,
        fields["category"],
        json.dumps(dict(captions), sort_keys=True, ensure_ascii=False),
        attributes_json,
        fields["image_path"],
        fields["fusion_caption"],
    )
