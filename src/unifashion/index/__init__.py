"""The catalogue index: each item's multi-vectors, caption-fusion vector and metadata on disk
(FAISS + SQLite), searched by max-sim.

:class:`CatalogueIndex` answers max-sim queries: a pooled-vector FAISS stage proposes candidates,
exact max-sim (+ caption fusion) re-ranks them. It takes numpy arrays and does not depend on the
model, so pipelines and the service both build on it (serving -> pipelines -> index, models).
"""


from unifashion.index.ann import ANN_KINDS
from unifashion.index.catalogue_index import CatalogueIndex
from unifashion.index.errors import (
    CatalogueIndexError,
    DuplicateItemError,
    IndexLockedError,
    ModelMismatchError,
    UnknownItemError,
)
from unifashion.index.snapshot_search import Hit
from unifashion.index.store import ItemMetadata

__all__ = [
    "ModelMismatchError",
    "ANN_KINDS",
    "CatalogueIndex",
    "CatalogueIndexError",
    "DuplicateItemError",
    "Hit",
    "IndexLockedError",
    "ItemMetadata",
    "UnknownItemError",
]
