"""The catalogue index: each item's multi-vectors, caption-fusion vector and metadata on disk
(FAISS + SQLite), searched by max-sim.

:class:`CatalogueIndex` answers max-sim queries: a FAISS stage over every item vector proposes
candidates, exact max-sim (+ caption fusion) re-ranks them. It takes numpy arrays and does not
depend on the model, so pipelines and the service both build on it (serving -> pipelines -> index).
:class:`MilvusCatalogueIndex` offers the same interface over Milvus
(:class:`CatalogueIndexProtocol`, protocols.py, is that interface); :func:`open_index` and
:func:`create_index` (backends.py) pick the backend.
"""


from unifashion.index.ann import ANN_KINDS
from unifashion.index.backends import BACKENDS, create_index, index_exists, open_index
from unifashion.index.catalogue_index import CatalogueIndex
from unifashion.index.errors import (
    CatalogueIndexError,
    DuplicateItemError,
    IndexLockedError,
    ModelMismatchError,
    UnknownItemError,
)
from unifashion.index.milvus_index import MilvusBackend, MilvusCatalogueIndex
from unifashion.index.protocols import CatalogueIndexProtocol
from unifashion.index.snapshot_search import Hit
from unifashion.index.store import ItemMetadata

__all__ = [
    "ModelMismatchError",
    "ANN_KINDS",
    "BACKENDS",
    "MilvusBackend",
    "MilvusCatalogueIndex",
    "create_index",
    "index_exists",
    "open_index",
    "CatalogueIndex",
    "CatalogueIndexError",
    "CatalogueIndexProtocol",
    "DuplicateItemError",
    "Hit",
    "IndexLockedError",
    "ItemMetadata",
    "UnknownItemError",
]
