"""The Milvus side of a Milvus-backed index: where it lives (:class:`MilvusBackend`, recorded in
the folder's ``backend.json``), the connection, and the collections with their rows.

Collections, all named after ``MilvusBackend.collection`` (``C``)::

    C_vectors   pk = key * num_queries + slot, item_key, category, vector (Z_q), fused (Z_q + w Z_C)
    C_items     key, item_id, category, metadata (JSON), fusion (Z_C)
    C_meta      name -> JSON value: config, state (generation, next key), journal, writer

The fused field exists when the index's fused weight w is not 0. pymilvus is imported only when
a client is made (``pip install 'unifashion[milvus]'``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unifashion.index.errors import CatalogueIndexError
from unifashion.index.store import ItemMetadata, metadata_from_row

#: The file in an index folder that says the index lives in Milvus (and where).
BACKEND_FILE = "backend.json"
#: The milvus-lite database of an index folder when no URI is given.
MILVUS_LITE_FILE = "milvus.db"
#: Environment variable with the token of a Milvus cluster ("user:password" or an API key).
TOKEN_ENV = "UNIFASHION_MILVUS_TOKEN"
#: Index types whose distances are the exact inner products of the vectors they return.
EXACT_SCORE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")

FORMAT_VERSION = 1
MAX_LIMIT = 16384  # Milvus's largest search / query limit
INSERT_ROWS = 2048  # rows per insert request (2048 x 2 x 256 float32: 4 MiB)
KEYS_PER_QUERY = 1000  # keys per "in [...]" filter
SCAN_BATCH = 4096  # rows per batch of an exhaustive scan
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
DUMMY_DIM = 2  # Milvus wants a vector field in every collection, the meta one too


def pymilvus_module():
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


def default_index_params(index_type: str, nlist: int) -> dict[str, Any]:
    if index_type.startswith("IVF"):
        return {"nlist": nlist}
    if index_type == "HNSW":
        return {"M": 16, "efConstruction": 200}
    return {}


def quoted(text: str) -> str:
    """A Milvus filter string literal (milvus-lite has no filter templates)."""
    return json.dumps(text, ensure_ascii=False)


def keys_filter(field: str, keys: Sequence[int]) -> str:
    return f"{field} in [{', '.join(str(int(k)) for k in keys)}]"


def connect(folder: Path, backend: MilvusBackend) -> Any:
    """A client of the Milvus that ``backend`` names (for ``folder``'s milvus-lite file when it names no URI)."""
    token = backend.token or os.environ.get(TOKEN_ENV) or ""
    uri = backend.resolved_uri(folder)
    try:
        return pymilvus_module().MilvusClient(uri=uri, token=token)
    except Exception as exc:
        hint = ("; a milvus-lite file opens in one process at a time: stop the other one, or serve the "
                "index from a Milvus server") if uri.endswith(".db") else ""
        raise CatalogueIndexError(f"cannot connect to Milvus at {uri}: {exc}{hint}") from exc


def create_collections(client: Any, names: dict[str, str], config: dict[str, Any]) -> None:
    """The three collections of an index (see the module docstring), indexed and loaded."""
    DataType = pymilvus_module().DataType
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
                         ("dummy", DataType.FLOAT_VECTOR, {"dim": DUMMY_DIM})], {"dummy": ("FLAT", {})})


def meta_row(name: str, value: Any) -> dict[str, Any]:
    """The ``C_meta`` row that holds ``value`` under ``name``."""
    return {"name": name, "value": json.dumps(value), "dummy": [0.0] * DUMMY_DIM}


def read_meta(client: Any, collection: str, name: str) -> Any:
    """The value under ``name`` in a ``C_meta`` collection, or None."""
    rows = client.query(collection, filter=f"name == {quoted(name)}", output_fields=["value"], limit=1)
    return json.loads(rows[0]["value"]) if rows else None


def item_metadata(row: dict[str, Any]) -> ItemMetadata:
    """An item row's metadata, as the local index returns it."""
    meta = row["metadata"]
    return metadata_from_row(row["item_id"], row["category"], json.dumps(meta["captions"]),
                             json.dumps(meta["attributes"]), meta["image_path"], meta["fusion_caption"])


def collection_names(collection: str) -> dict[str, str]:
    """The names of an index's collections by part ("vectors", "items", "meta")."""
    return {part: f"{collection}_{part}" for part in ("vectors", "items", "meta")}
