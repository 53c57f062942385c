"""A catalogue index stored in Milvus (a milvus-lite file or a Milvus cluster), with the interface
of :class:`~unifashion.index.CatalogueIndex`.

Max-sim is a grouping search. Every item vector is one Milvus row carrying its item's key, so a
search over the vectors grouped by ``item_key`` (Milvus's ``group_by_field``) returns each item's
best vector: its max-sim score. Caption fusion keeps that form at the index's fused weight w,
``max_q <e, Z_q> + w <e, Z_C> = max_q <e, Z_q + w Z_C>``, so each row also holds the fused vector
``Z_q + w Z_C`` in a second vector field, which composed queries at that weight search. At any
other weight the plain field proposes the candidates and the fusion term is added to them, as the
local index does. Scores are the engine's inner products, exact for the index types that keep
raw vectors (FLAT, IVF_FLAT, HNSW; FLAT in milvus-lite's tests); ``exact=True`` scans every row
and scores it here, the reference.

Collections, all named after ``MilvusBackend.collection`` (``C``)::

    C_vectors   pk = key * num_queries + slot, item_key, category, vector (Z_q), fused (Z_q + w Z_C)
    C_items     key, item_id, category, metadata (JSON), fusion (Z_C)
    C_meta      name -> JSON value: config, state (generation, next key), journal, writer

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

The module imports pymilvus only when an index is opened (``pip install 'unifashion[milvus]'``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unifashion.index.errors import CatalogueIndexError, DuplicateItemError, IndexLockedError, UnknownItemError
from unifashion.index.kernels import fusion_block, maxsim_block, ranked, to_fp16_storage, unit_queries
from unifashion.index.snapshot_search import Hit
from unifashion.index.store import ItemMetadata, metadata_from_row
from unifashion.index.validation import (
    MetadataInput,
    check_batch,
    check_fusion_vectors_given,
    check_ids,
    check_positive_int,
    check_queries,
    check_search_options,
    check_vectors,
    item_row,
    no_captions_error,
)

#: The file in an index folder that says the index lives in Milvus (and where).
BACKEND_FILE = "backend.json"
#: The milvus-lite database of an index folder when no URI is given.
MILVUS_LITE_FILE = "milvus.db"
#: Environment variable with the token of a Milvus cluster ("user:password" or an API key).
TOKEN_ENV = "UNIFASHION_MILVUS_TOKEN"
#: Index types whose distances are the exact inner products of the vectors they return.
EXACT_SCORE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")

_FORMAT_VERSION = 1
_DEFAULT_CANDIDATES = 200  # as the local vector-level stage (ann.DEFAULT_VECTOR_CANDIDATES)
_MAX_LIMIT = 16384  # Milvus's largest search / query limit
_INSERT_ROWS = 2048  # rows per insert request (2048 x 2 x 256 float32: 4 MiB)
_KEYS_PER_QUERY = 1000  # keys per "in [...]" filter
_SCAN_BATCH = 4096  # rows per batch of an exhaustive scan
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_DUMMY_DIM = 2  # Milvus wants a vector field in every collection, the meta one too


def _pymilvus():
    try:
        import pymilvus
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Milvus backend needs pymilvus (and milvus-lite for a local file): "
            "pip install 'unifashion[milvus]'"
        ) from exc
    return pymilvus


@dataclass(frozen=True)
class MilvusBackend:
    """Where a Milvus-backed index lives.

    uri: a milvus-lite database file (``*.db``) or a cluster's address (``http://host:19530``);
    None: ``milvus.db`` in the index folder. collection: the prefix of the index's collections.
    token: a cluster's credentials, never written to disk (default: ``$UNIFASHION_MILVUS_TOKEN``).
    index_type / index_params: the vector index Milvus builds (e.g. FLAT, IVF_FLAT, HNSW).
    """

    uri: str | None = None
    collection: str = "unifashion"
    token: str | None = None
    index_type: str = "HNSW"
    index_params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.collection):
            raise ValueError(f"a Milvus collection name must be letters, digits and '_' (not starting with a digit), "
                             f"got {self.collection!r}")
        if not isinstance(self.index_type, str) or not self.index_type:
            raise ValueError(f"index_type must be a Milvus index type such as 'HNSW', got {self.index_type!r}")

    def resolved_uri(self, folder: Path) -> str:
        if self.uri is None:
            return str((folder / MILVUS_LITE_FILE).resolve())
        return self.uri

    def to_file(self) -> dict[str, Any]:
        """What ``backend.json`` records (no token)."""
        return {"backend": "milvus", "uri": self.uri, "collection": self.collection, "index_type": self.index_type,
                "index_params": self.index_params}

    @classmethod
    def from_file(cls, folder: Path) -> MilvusBackend:
        path = folder / BACKEND_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a readable backend description: {exc}") from exc
        if data.get("backend") != "milvus":
            raise ValueError(f"{path} names backend {data.get('backend')!r}; this version knows 'milvus'")
        return cls(uri=data.get("uri"), collection=data["collection"], index_type=data.get("index_type", "HNSW"),
                   index_params=data.get("index_params"))


def _default_index_params(index_type: str, nlist: int) -> dict[str, Any]:
    if index_type.startswith("IVF"):
        return {"nlist": nlist}
    if index_type == "HNSW":
        return {"M": 16, "efConstruction": 200}
    return {}


def _quoted(text: str) -> str:
    """A Milvus filter string literal (milvus-lite has no filter templates)."""
    return json.dumps(text, ensure_ascii=False)


def _keys_filter(field: str, keys: Sequence[int]) -> str:
    return f"{field} in [{', '.join(str(int(k)) for k in keys)}]"


class MilvusCatalogueIndex:
    """Storage and max-sim search of a catalogue in Milvus; the interface of
    :class:`~unifashion.index.CatalogueIndex` (see the module docstring for how it maps)."""

    def __init__(self, folder: Path, backend: MilvusBackend, read_only: bool, client: Any, config: dict[str, Any]):
        """Use :meth:`create` or :meth:`open`."""
        self.folder = folder
        self.backend = backend
        self.read_only = read_only
        self._client = client
        self._lock = threading.RLock()
        self._names = {part: f"{backend.collection}_{part}" for part in ("vectors", "items", "meta")}
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

    @staticmethod
    def _connect(folder: Path, backend: MilvusBackend) -> Any:
        token = backend.token or os.environ.get(TOKEN_ENV) or ""
        uri = backend.resolved_uri(folder)
        try:
            return _pymilvus().MilvusClient(uri=uri, token=token)
        except Exception as exc:
            hint = ("; a milvus-lite file opens in one process at a time: stop the other one, or serve the "
                    "index from a Milvus server") if uri.endswith(".db") else ""
            raise CatalogueIndexError(f"cannot connect to Milvus at {uri}: {exc}{hint}") from exc

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
        nprobe: int = 16,
        pq_m: int | None = None,
        fused_weight: float = 1.0,
        captions: bool = True,
    ) -> MilvusCatalogueIndex:
        """Create the index's collections and its folder (which holds ``backend.json``, and the
        milvus-lite file when ``backend.uri`` is None), and open it for writing. ``nlist`` /
        ``nprobe`` configure IVF index types; ``pq_m`` is a FAISS setting, unused here.
        ``captions=False``: items without caption-fusion vectors (as :meth:`CatalogueIndex.create`)."""
        backend = backend or MilvusBackend()
        folder = Path(path)
        for name, value in (("dim", dim), ("num_queries", num_queries), ("nlist", nlist), ("nprobe", nprobe)):
            check_positive_int(value, name)
        if ann != "vectors":
            raise ValueError(f"the Milvus backend indexes every item vector (ann='vectors'), got ann={ann!r}")
        if (isinstance(fused_weight, bool) or not isinstance(fused_weight, (int, float))
                or not np.isfinite(fused_weight)):
            raise ValueError(f"fused_weight must be a finite number, got {fused_weight!r}")
        if not isinstance(captions, bool):
            raise ValueError(f"captions must be True or False, got {captions!r}")
        if not captions:
            fused_weight = 0.0
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"{folder} exists and is not an empty folder; use MilvusCatalogueIndex.open "
                                  "(or unifashion.index.open_index) to reopen an index")
        folder.mkdir(parents=True, exist_ok=True)
        client = cls._connect(folder, backend)
        names = {part: f"{backend.collection}_{part}" for part in ("vectors", "items", "meta")}
        existing = [n for n in names.values() if client.has_collection(n)]
        if existing:
            raise FileExistsError(f"Milvus at {backend.resolved_uri(folder)} already has collection(s) "
                                  f"{', '.join(existing)}; pick another --milvus-collection or drop them")
        params = backend.index_params if backend.index_params is not None else _default_index_params(
            backend.index_type, nlist)
        config = {"format_version": _FORMAT_VERSION, "dim": int(dim), "num_queries": int(num_queries),
                  "fused_weight": float(fused_weight), "captions": captions, "nprobe": int(nprobe),
                  "index_type": backend.index_type, "index_params": params}
        cls._create_collections(client, names, config)
        client.upsert(names["meta"], [_meta_row("config", config),
                                      _meta_row("state", {"generation": 0, "next_key": 0})])
        (folder / BACKEND_FILE).write_text(json.dumps(backend.to_file(), indent=2) + "\n")
        return cls.open(folder, backend=backend, _client=client)

    @staticmethod
    def _create_collections(client: Any, names: dict[str, str], config: dict[str, Any]) -> None:
        DataType = _pymilvus().DataType
        dim, index_type, params = config["dim"], config["index_type"], config["index_params"]

        def make(name: str, fields: list[tuple], vector_fields: dict[str, tuple[str, dict]]) -> None:
            schema = client.create_schema(auto_id=False)
            for field_name, dtype, options in fields:
                schema.add_field(field_name, dtype, **options)
            index_params = client.prepare_index_params()
            for field_name, (kind, kind_params) in vector_fields.items():
                index_params.add_index(field_name, index_type=kind, metric_type="IP", params=kind_params)
            client.create_collection(name, schema=schema, consistency_level="Strong")
            # sync=False: the collection is empty, so there is nothing to wait for (pymilvus would
            # poll every 0.5 s per index); loading follows the index's creation.
            client.create_index(name, index_params, sync=False)
            client.load_collection(name)

        vector_fields = {"vector": (index_type, params)}
        fields = [("pk", DataType.INT64, {"is_primary": True}), ("item_key", DataType.INT64, {}),
                  ("category", DataType.VARCHAR, {"max_length": 1024}),
                  ("vector", DataType.FLOAT_VECTOR, {"dim": dim})]
        if config["fused_weight"]:
            fields.append(("fused", DataType.FLOAT_VECTOR, {"dim": dim}))
            vector_fields["fused"] = (index_type, params)
        make(names["vectors"], fields, vector_fields)
        make(names["items"], [("key", DataType.INT64, {"is_primary": True}),
                              ("item_id", DataType.VARCHAR, {"max_length": 4096}),
                              ("category", DataType.VARCHAR, {"max_length": 1024}),
                              ("metadata", DataType.JSON, {}),
                              ("fusion", DataType.FLOAT_VECTOR, {"dim": dim})], {"fusion": ("FLAT", {})})
        make(names["meta"], [("name", DataType.VARCHAR, {"is_primary": True, "max_length": 64}),
                             ("value", DataType.VARCHAR, {"max_length": 65535}),
                             ("dummy", DataType.FLOAT_VECTOR, {"dim": _DUMMY_DIM})], {"dummy": ("FLAT", {})})

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
        client = _client or cls._connect(folder, backend)
        meta = f"{backend.collection}_meta"
        if not client.has_collection(meta):
            raise FileNotFoundError(f"no catalogue index in Milvus at {backend.resolved_uri(folder)} "
                                    f"(no collection {meta})")
        for part in ("meta", "items", "vectors"):
            client.load_collection(f"{backend.collection}_{part}")  # a restarted server has them released
        config = _read_meta(client, meta, "config")
        if config is None or config.get("format_version") != _FORMAT_VERSION:
            version = None if config is None else config.get("format_version")
            raise ValueError(f"the Milvus index {backend.collection} has format {version}; "
                             f"this code reads {_FORMAT_VERSION}")
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
        return _read_meta(self._client, self._names["meta"], name)

    def _set_meta(self, name: str, value: Any) -> None:
        self._client.upsert(self._names["meta"], [_meta_row(name, value)])

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
        window = _SCAN_BATCH if part == "items" else max(1, _SCAN_BATCH // self.num_queries)
        for low in range(0, high_key, window):
            rows = self._client.query(
                self._names[part], filter=f"{key_field} >= {low} and {key_field} < {low + window} and ({filter_text})",
                output_fields=list(fields), limit=_MAX_LIMIT)
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
        rows = self._client.query(self._names["items"], filter=f"item_id == {_quoted(item_id)} and {self._visible()}",
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
        return [_metadata(r) for r in sorted(rows, key=lambda r: r["key"])]

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
                                      filter=f"item_id == {_quoted(item_id)} and {self._visible()}",
                                      output_fields=["item_id", "category", "metadata"], limit=1)
        if not rows:
            raise UnknownItemError(f"no item {item_id!r} in the Milvus index {self.backend.collection}")
        return _metadata(rows[0])

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
        for start in range(0, len(item_ids), _KEYS_PER_QUERY):
            batch = item_ids[start:start + _KEYS_PER_QUERY]
            names = ", ".join(_quoted(i) for i in batch)
            for row in self._client.query(self._names["items"], filter=f"item_id in [{names}] and {visible}",
                                          output_fields=["key", "item_id"], limit=len(batch)):
                found[row["item_id"]] = int(row["key"])
        return found

    def _add(self, ids, multi_vectors, fusion_vectors, metadata, fusion_captions, normalize, commit, upsert) -> None:
        with self._lock:
            self._check_writable()
            item_ids = check_ids(ids, "ids")
            count = len(item_ids)
            multi_vectors, fusion_vectors = check_batch(
                count, multi_vectors, fusion_vectors, metadata, fusion_captions, self.num_queries, self.dim)
            check_fusion_vectors_given(self.captions, fusion_vectors, self.folder)
            if count == 0:
                return
            committed = self._committed_keys(item_ids)
            existing = [i for i in item_ids if i in self._pending_items
                        or (i in committed and committed[i] not in self._pending_deletes)]
            if existing and not upsert:
                shown = ", ".join(repr(i) for i in existing[:5]) + (" ..." if len(existing) > 5 else "")
                raise DuplicateItemError(
                    f"{len(existing)} of the ids are already in the index: {shown}; use upsert() to replace them")
            multi = np.array(multi_vectors, dtype=np.float32)
            check_vectors(multi, "multi_vectors", item_ids, 0, normalize)
            if normalize:
                multi /= np.linalg.norm(multi, axis=-1, keepdims=True)
            if fusion_vectors is None:  # an index without captions: a zero fusion term
                fusion = np.zeros((count, self.dim), dtype=np.float32)
            else:
                fusion = np.array(fusion_vectors, dtype=np.float32)
                check_vectors(fusion[:, None, :], "fusion_vectors", item_ids, 0, normalize)
                if normalize:
                    fusion /= np.linalg.norm(fusion, axis=-1, keepdims=True)
            # The values the local index stores (fp16), so that both backends score the same numbers.
            multi = to_fp16_storage(multi).astype(np.float32)
            fusion = to_fp16_storage(fusion).astype(np.float32)
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
            unknown = [i for i in item_ids if i not in self._pending_items
                       and (i not in committed or committed[i] in self._pending_deletes)]
            if unknown:
                shown = ", ".join(repr(i) for i in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
                raise UnknownItemError(
                    f"cannot delete {len(unknown)} id(s) not in the Milvus index {self.backend.collection}: {shown}")
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
        weight = np.float32(self.fused_weight)
        vector_rows, item_rows = [], []
        for offset, (row, multi, fusion) in enumerate(staged):
            key = first_key + offset
            fused = multi + weight * fusion[None, :] if self.fused_weight else None
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
            for start in range(0, len(rows), _INSERT_ROWS):
                self._client.insert(self._names[name], rows[start:start + _INSERT_ROWS])

    def _finish(self, journal: dict[str, Any]) -> None:
        """The rest of a commit once its rows are inserted: deletes, then the state switch."""
        deleted = journal["deleted"]
        for start in range(0, len(deleted), _KEYS_PER_QUERY):
            batch = deleted[start:start + _KEYS_PER_QUERY]
            self._client.delete(self._names["items"], filter=_keys_filter("key", batch))
            self._client.delete(self._names["vectors"], filter=_keys_filter("item_key", batch))
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

    def search(self, query: Any, top_k: int = 10, *, candidates: int | None = None, fusion_weight: float = 0.0,
               category: str | None = None, exact: bool = False,
               nprobe: int | None = None) -> list[Hit] | list[list[Hit]]:
        """The ``top_k`` items by ``max_q <e, Z_q> + fusion_weight * <e, Z_C>``, best first (as
        :meth:`CatalogueIndex.search`). ``candidates`` items are proposed by a grouping search
        (default ``max(200, 10 * top_k)``, at most 16384) and ranked with the fusion term;
        ``nprobe`` is passed to IVF index types (HNSW searches with ef = max(candidates, 64))."""
        queries, single = check_queries(query, self.dim)
        check_search_options(top_k, candidates, fusion_weight, nprobe, category)
        if fusion_weight and not self.captions:
            raise no_captions_error(self.folder)
        if candidates is None:
            candidates = max(_DEFAULT_CANDIDATES, 10 * int(top_k))
        with self._lock:
            if category is not None and category not in self.categories():
                known = ", ".join(repr(c) for c in list(self.categories())[:20])
                raise ValueError(f"unknown category {category!r}; the index has {known}")
            next_key = int(self._state()["next_key"])
            if exact:
                ranked_lists = self._search_exact(queries, int(top_k), float(fusion_weight), category, next_key)
            else:
                ranked_lists = self._search_grouped(queries, int(top_k), min(int(candidates), _MAX_LIMIT),
                                                    float(fusion_weight), category, nprobe or self.nprobe, next_key)
            hits = self._hits(ranked_lists)
        return hits[0] if single else hits

    def _filter(self, field: str, category: str | None, next_key: int) -> str:
        text = f"{field} < {next_key}"
        return text if category is None else f"{text} and category == {_quoted(category)}"

    def _items_by_key(self, keys: Sequence[int], fields: Sequence[str]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        keys = sorted({int(k) for k in keys})
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            batch = keys[start:start + _KEYS_PER_QUERY]
            for row in self._client.query(self._names["items"], filter=_keys_filter("key", batch),
                                          output_fields=["key", *fields], limit=len(batch)):
                out[int(row["key"])] = row
        return out

    def _search_grouped(self, queries, top_k, candidates, fusion_weight, category, nprobe, next_key):
        fused = self.fused_weight != 0 and fusion_weight == self.fused_weight
        params = {"nprobe": nprobe, "ef": max(candidates, 64)}
        found = self._client.search(
            self._names["vectors"], data=[q for q in queries], anns_field="fused" if fused else "vector",
            limit=candidates, group_by_field="item_key", output_fields=["item_key"],
            filter=self._filter("item_key", category, next_key),
            search_params={"metric_type": "IP", "params": params})
        per_query = [(np.array([h["entity"]["item_key"] for h in row], dtype=np.int64),
                      np.array([h["distance"] for h in row], dtype=np.float32)) for row in found]
        # Z_C of every candidate: the fusion term (and, from the fused score, max-sim).
        items = self._items_by_key([k for keys, _ in per_query for k in keys], ["fusion"]) if fusion_weight else {}
        out = []
        for q, (keys, distances) in enumerate(per_query):
            if fusion_weight:
                present = np.array([int(k) in items for k in keys], dtype=bool)
                keys, distances = keys[present], distances[present]
                fusion_vectors = np.array([items[int(k)]["fusion"] for k in keys], dtype=np.float32)
                fusion = fusion_vectors.reshape(-1, self.dim) @ queries[q]
            else:
                fusion = np.zeros(len(keys), dtype=np.float32)
            maxsim = distances - np.float32(fusion_weight) * fusion if fused else distances
            out.append(ranked(keys, maxsim, fusion, fusion_weight, 1.0, top_k))
        return out

    def _search_exact(self, queries, top_k, fusion_weight, category, next_key):
        """Score every row here, from the stored values, with the local index's kernels."""
        unit, norms = unit_queries(queries)
        best: dict[int, np.ndarray] = {}
        for batch in self._scan("vectors", self._filter("item_key", category, next_key), ["item_key", "vector"],
                                next_key):
            keys = np.array([r["item_key"] for r in batch], dtype=np.int64)
            vectors = to_fp16_storage(np.array([r["vector"] for r in batch], dtype=np.float32))
            scores = maxsim_block(vectors[:, None, :], unit)  # (rows, Q): one vector per "item"
            for key in np.unique(keys):
                row_max = scores[keys == key].max(axis=0)
                best[int(key)] = np.maximum(best[int(key)], row_max) if int(key) in best else row_max
        keys = np.array(sorted(best), dtype=np.int64)
        if len(keys) == 0:
            empty = np.empty(0, np.float32)
            return [(np.empty(0, np.int64), empty, empty, empty) for _ in range(len(queries))]
        maxsim = np.stack([best[int(k)] for k in keys])  # (items, Q)
        fusion = np.zeros_like(maxsim)
        if fusion_weight:
            items = self._items_by_key(keys, ["fusion"])
            keep = np.array([int(k) in items for k in keys], dtype=bool)
            keys, maxsim, fusion = keys[keep], maxsim[keep], fusion[keep]
            stored = to_fp16_storage(np.array([items[int(k)]["fusion"] for k in keys], dtype=np.float32))
            fusion = fusion_block(stored, unit)
        return [ranked(keys, maxsim[:, q], fusion[:, q], fusion_weight, norms[q], top_k) for q in range(len(queries))]

    def _hits(self, ranked_lists) -> list[list[Hit]]:
        items = self._items_by_key([k for keys, *_ in ranked_lists for k in keys], ["item_id", "category", "metadata"])
        hits = []
        for keys, scores, maxsim, fusion in ranked_lists:
            row_hits = []
            for r, key in enumerate(keys):
                if int(key) not in items:  # deleted by a commit in progress
                    continue
                metadata = _metadata(items[int(key)])
                row_hits.append(Hit(metadata.item_id, float(scores[r]), len(row_hits) + 1, float(maxsim[r]),
                                    float(fusion[r]), metadata))
            hits.append(row_hits)
        return hits


def _meta_row(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": json.dumps(value), "dummy": [0.0] * _DUMMY_DIM}


def _read_meta(client: Any, collection: str, name: str) -> Any:
    rows = client.query(collection, filter=f"name == {_quoted(name)}", output_fields=["value"], limit=1)
    return json.loads(rows[0]["value"]) if rows else None


def _metadata(row: dict[str, Any]) -> ItemMetadata:
    meta = row["metadata"]
    return metadata_from_row(row["item_id"], row["category"], json.dumps(meta["captions"]),
                             json.dumps(meta["attributes"]), meta["image_path"], meta["fusion_caption"])
