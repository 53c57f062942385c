"""Serving: the on-disk catalogue index (FAISS + SQLite) that search runs on.

:class:`CatalogueIndex` stores each item's multi-vectors, caption-fusion vector and metadata, and
answers max-sim queries: a pooled-vector FAISS stage proposes candidates, exact max-sim (+ caption
fusion) re-ranks them. It takes numpy arrays and does not depend on the model.
"""

from unifashion.serving.index import (
    ANN_KINDS,
    CatalogueIndex,
    CatalogueIndexError,
    DuplicateItemError,
    Hit,
    IndexLockedError,
    UnknownItemError,
)
from unifashion.serving.store import ItemMetadata

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
