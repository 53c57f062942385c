"""The catalogue index: each item's multi-vectors, caption-fusion vector and metadata on disk
(FAISS + SQLite), searched by max-sim.

:class:`CatalogueIndex` answers max-sim queries: a pooled-vector FAISS stage proposes candidates,
exact max-sim (+ caption fusion) re-ranks them. It takes numpy arrays and does not depend on the
model, so pipelines and the service both build on it (serving -> pipelines -> index, models).
"""


from unifashion.index.catalogue import (
    ANN_KINDS,
    CatalogueIndex,
    CatalogueIndexError,
    DuplicateItemError,
    Hit,
    IndexLockedError,
    UnknownItemError,
)
from unifashion.index.store import ItemMetadata

__all__ = [
    "ANN_KINDS",
    "CatalogueIndex",
    "CatalogueIndexError",
    "DuplicateItemError",
    "Hit",
    "IndexLockedError",
    "ItemMetadata",
    "UnknownItemError",
]
