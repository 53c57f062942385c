"""What the pipelines, the CLI and the service need of a catalogue index, whichever backend holds
it: :class:`CatalogueIndexProtocol`. :class:`~unifashion.index.CatalogueIndex` (local files) and
:class:`~unifashion.index.MilvusCatalogueIndex` both satisfy it (tests/index/test_protocols.py
checks their members and signatures against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from unifashion.index.snapshot_search import Hit
from unifashion.index.store import ItemMetadata
from unifashion.index.validation import MetadataInput


@runtime_checkable
class CatalogueIndexProtocol(Protocol):
    """A catalogue index: items' multi-vectors, caption vectors and metadata, searched by max-sim.

    Attributes: ``folder`` (the index's folder: saved images and text embeddings live there),
    ``dim`` and ``num_queries`` (the vectors' shape), ``captions`` (whether items carry caption
    vectors) and ``read_only``.
    """

    folder: Path
    dim: int
    num_queries: int
    captions: bool
    read_only: bool

    @property
    def generation(self) -> int:
        """The committed generation this instance sees (bumped by every commit)."""

    @property
    def model_identity(self) -> str | None:
        """The identity of the model that made the vectors, or None when none is recorded."""

    def record_model_identity(self, identity: str) -> None: ...

    def __len__(self) -> int: ...

    def __contains__(self, item_id: object) -> bool: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info) -> None: ...

    def close(self) -> None: ...

    def ids(self) -> list[str]: ...

    def all_metadata(self) -> list[ItemMetadata]: ...

    def categories(self) -> dict[str, int]: ...

    def get(self, item_id: str) -> ItemMetadata: ...

    def vectors(self, item_id: str) -> tuple[np.ndarray, np.ndarray]: ...

    def stats(self) -> dict[str, Any]: ...

    def add(self, ids: Sequence[str], multi_vectors: Any, fusion_vectors: Any,
            metadata: Sequence[MetadataInput] | None = None, *, fusion_captions: Sequence[str] | None = None,
            normalize: bool = False, commit: bool = True, progress: bool | None = None) -> None: ...

    def upsert(self, ids: Sequence[str], multi_vectors: Any, fusion_vectors: Any,
               metadata: Sequence[MetadataInput] | None = None, *, fusion_captions: Sequence[str] | None = None,
               normalize: bool = False, commit: bool = True, progress: bool | None = None) -> None: ...

    def delete(self, ids: Sequence[str], *, commit: bool = True) -> None: ...

    def commit(self) -> int: ...

    def rollback(self) -> None: ...

    def compact(self) -> int: ...

    def search(self, query: Any, top_k: int = 10, *, candidates: int | None = None, fusion_weight: float = 0.0,
               category: str | None = None, exact: bool = False,
               nprobe: int | None = None) -> list[Hit] | list[list[Hit]]: ...


