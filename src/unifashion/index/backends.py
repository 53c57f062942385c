"""Which engine holds an index: the local files of :class:`CatalogueIndex` (FAISS + SQLite, the
default) or Milvus (:class:`MilvusCatalogueIndex`, for a milvus-lite file or a cluster).

Both are addressed by a folder. A local index's folder holds its files; a Milvus-backed index's
folder holds ``backend.json`` (the URI and collection; never a token), the milvus-lite file when
no URI is given, and the images the service stores for items added through it. So the CLI, the
pipelines and the service open either with :func:`open_index` ``(folder)``; only creating one
needs the backend (:func:`create_index`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unifashion.index.catalogue_index import CatalogueIndex
from unifashion.index.milvus_index import BACKEND_FILE, MilvusBackend, MilvusCatalogueIndex
from unifashion.index.store import DATABASE_NAME

#: The backends :func:`create_index` knows, by the name the CLI uses.
BACKENDS = ("faiss", "milvus")

AnyIndex = CatalogueIndex | MilvusCatalogueIndex


def index_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds an index of either backend."""
    folder = Path(path)
    return (folder / DATABASE_NAME).is_file() or (folder / BACKEND_FILE).is_file()


def open_index(path: str | os.PathLike, read_only: bool = False, backend: MilvusBackend | None = None,
               break_lock: bool = False) -> AnyIndex:
    """Open the index in folder ``path``, whichever backend holds it. ``backend`` overrides what a
    Milvus-backed folder records (e.g. to add a token, or to point at a cluster). ``break_lock``:
    take a Milvus index's write lock from a recorded writer that is gone (one on another host:
    a dead writer on this host is detected); a local index needs none, the operating system
    releases a dead writer's lock."""
    folder = Path(path)
    if backend is not None or (folder / BACKEND_FILE).is_file():
        return MilvusCatalogueIndex.open(folder, read_only=read_only, backend=backend, break_lock=break_lock)
    return CatalogueIndex.open(folder, read_only=read_only)


def create_index(path: str | os.PathLike, backend: MilvusBackend | None = None, **options: Any) -> AnyIndex:
    """Create an index in folder ``path``: local (``backend=None``) or in Milvus. ``options``:
    those of :meth:`CatalogueIndex.create` (dim, num_queries, ann, nlist, nprobe, pq_m,
    fused_weight, captions)."""
    if backend is not None:
        return MilvusCatalogueIndex.create(path, backend, **options)
    return CatalogueIndex.create(path, **options)
