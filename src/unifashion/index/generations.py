"""Committed generations: the snapshot a search reads, and the commit protocol that replaces it.

A *generation* is what one commit made visible: the manifest (in ``catalogue.sqlite``, see
store.py) names its vector segments (segments.py) and its FAISS file::

    ann/ann-g000012.faiss       the FAISS index of generation 12
    ann/ann-g000012.fused.faiss the vector-level kind's index of fused vectors (vector_ann.py)

The FAISS files are rewritten whole at each commit, under new names (without retraining: new
items are encoded with the trained quantisers). A :class:`Snapshot` is one generation opened in
memory: its segments memory-mapped, its
FAISS index loaded, and per-row lookups for the exact scan.

Crash safety. ``commit`` (1) writes and fsyncs the new segment files (``add`` already did) and the
new FAISS file under names no committed manifest refers to, then (2) changes the item rows and
the manifest in one SQLite transaction. The transaction is the switch: if the process dies before
it, the previous generation is intact and the new files are orphans, which the next commit
deletes; after it, the new generation is complete on disk. Readers open whatever the manifest
names, and because the manifest and the item rows change together, metadata and vectors agree.
Files are only ever deleted once no manifest names them; a reader in another process that still
maps them keeps reading them (POSIX unlink semantics).

Here: step (1)'s FAISS file is :func:`write_ann_file`, step (2) is :func:`switch_generation`,
the clean-up of orphans and superseded files is :func:`remove_stale_files`, and
:func:`load_snapshot` opens whatever the manifest names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from unifashion.index.ann import FLAT, AnnConfig, is_vector_kind, new_ann
from unifashion.index.errors import CatalogueIndexError
from unifashion.index.segments import (
    VECTORS_DIR,
    Segment,
    by_segment,
    crash_test_point,
    fsync_path,
    open_segment,
    segment_paths,
)
from unifashion.index.store import DATABASE_NAME, ItemRow, Layout, Manifest, MetadataStore
from unifashion.index.vector_ann import VECTORS, VectorAnn

ANN_DIR = "ann"


@dataclass
class Snapshot:
    """Everything a search needs about one committed generation. Never mutated after commit,
    except the FAISS index, which only a commit of the same instance changes (under its lock)."""

    manifest: Manifest
    layout: Layout
    segments: dict[int, Segment]
    ann: Any  # faiss.Index whose ids are item keys, or a VectorAnn
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


def make_snapshot(manifest: Manifest, layout: Layout, segments: dict[int, Segment], ann: Any) -> Snapshot:
    names, codes = np.unique(layout.categories.astype(str), return_inverse=True)
    codes = codes.astype(np.int32).reshape(-1)
    row_keys = {sid: np.full(seg.rows, -1, dtype=np.int64) for sid, seg in segments.items()}
    row_categories = {sid: np.full(seg.rows, -1, dtype=np.int32) for sid, seg in segments.items()}
    for sid, members in by_segment(layout.segments, layout.rows):
        row_keys[sid][layout.rows[members]] = layout.keys[members]
        row_categories[sid][layout.rows[members]] = codes[members]
    names = [str(n) for n in names]
    return Snapshot(
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


def load_snapshot(folder: Path, store: MetadataStore, num_queries: int, dim: int) -> Snapshot:
    """Open the generation the manifest names: its segments and its FAISS index."""
    # A writer may commit (and delete the previous generation's files) between our reading
    # the manifest and opening its files; then the files are gone but a newer manifest
    # exists, so read again.
    for _attempt in range(10):
        manifest, layout = store.read_committed()
        try:
            segments = {sid: open_segment(folder, sid, rows, num_queries, dim) for sid, rows in manifest.segments}
            if manifest.ann_file and is_vector_kind(manifest.ann_kind):
                fused_weight = AnnConfig.from_config(store.config()).fused_weight
                fused_path = ann_part_path(folder, manifest.ann_file, "fused")
                fused = _read_faiss(fused_path) if fused_path.is_file() else None
                ann = VectorAnn(_read_faiss(folder / ANN_DIR / manifest.ann_file), fused, fused_weight)
            elif manifest.ann_file:
                ann = _read_faiss(folder / ANN_DIR / manifest.ann_file)
            else:  # nothing committed yet; pooled kinds stay flat until they can be trained
                config = AnnConfig.from_config(store.config())
                ann = new_ann(config if config.kind == VECTORS else FLAT, dim)
        except FileNotFoundError:
            if store.generation() != manifest.generation:
                continue
            raise
        return make_snapshot(manifest, layout, segments, ann)
    raise CatalogueIndexError(f"{folder} kept changing while being opened")


def _read_faiss(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"ANN file missing: {path}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:  # FAISS's error when the file vanished after the check
        if not path.is_file():
            raise FileNotFoundError(f"ANN file missing: {path}") from exc
        raise


def ann_part_path(folder: Path, ann_file: str, part: str) -> Path:
    """The file of one part of a generation's ANN ("" for the main file, "fused" beside it)."""
    name = ann_file if not part else ann_file.removesuffix(".faiss") + f".{part}.faiss"
    return folder / ANN_DIR / name


def next_layout(layout: Layout, deleted: np.ndarray, new_rows: Sequence[ItemRow]) -> tuple[Layout, int]:
    """The live items after a commit: those of ``layout`` whose keys are not ``deleted``, then
    ``new_rows``. Returns the layout and how many of its items were kept from ``layout``."""
    keep = ~np.isin(layout.keys, deleted)
    after = Layout(
        keys=np.concatenate([layout.keys[keep], np.array([r.key for r in new_rows], dtype=np.int64)]),
        segments=np.concatenate([layout.segments[keep], np.array([r.segment for r in new_rows], dtype=np.int64)]),
        rows=np.concatenate([layout.rows[keep], np.array([r.row for r in new_rows], dtype=np.int64)]),
        categories=np.concatenate([layout.categories[keep], np.array([r.category for r in new_rows], dtype=object)]),
    )
    return after, int(keep.sum())


def ann_file_name(generation: int) -> str:
    return f"ann-g{generation:06d}.faiss"


def write_ann_file(folder: Path, ann: Any, generation: int) -> str:
    """Step (1): write and fsync generation ``generation``'s FAISS file(s); returns the name of
    the main one (a VectorAnn's fused index lies beside it, see :func:`ann_part_path`)."""
    name = ann_file_name(generation)
    parts = ann.parts() if isinstance(ann, VectorAnn) else {"": ann}
    for part, index in parts.items():
        path = ann_part_path(folder, name, part)
        path.unlink(missing_ok=True)  # an orphan of a crashed commit
        faiss.write_index(index, str(path))
        fsync_path(path)
    fsync_path(folder / ANN_DIR)
    return name


def switch_generation(store: MetadataStore, manifest: Manifest, **changes: Any) -> None:
    """Step (2): the one SQLite transaction that changes the item rows (``changes``, see
    :meth:`MetadataStore.apply`) and makes ``manifest`` the committed one. Every file it names
    must already be on disk, fsynced."""
    crash_test_point("before_manifest_switch")
    store.apply(manifest, **changes)


def remove_stale_files(folder: Path, manifest: Manifest, pending_segments: Iterable[tuple[int, int]]) -> None:
    """Delete vector and FAISS files that neither the manifest nor staged changes name:
    superseded generations and the leftovers of crashed writers."""
    wanted = set()
    if manifest.ann_file:
        wanted = {ann_part_path(folder, manifest.ann_file, part) for part in ("", "fused")}
    for sid, _rows in (*manifest.segments, *pending_segments):
        wanted.update(segment_paths(folder, sid).values())
    for sub in (VECTORS_DIR, ANN_DIR):
        for path in (folder / sub).iterdir():
            if path not in wanted:
                path.unlink(missing_ok=True)


def bytes_on_disk(folder: Path, snap: Snapshot) -> dict[str, int]:
    """The sizes of a generation's files, by kind (the metadata database with its WAL files)."""
    sizes = {"multi": 0, "fusion": 0, "pooled": 0}
    for sid in snap.segments:
        for part, path in segment_paths(folder, sid).items():
            sizes[part] += path.stat().st_size
    ann_bytes = 0
    if snap.manifest.ann_file:
        paths = [ann_part_path(folder, snap.manifest.ann_file, part) for part in ("", "fused")]
        ann_bytes = sum(p.stat().st_size for p in paths if p.is_file())
    database_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(DATABASE_NAME))
    return {
        "multi_vectors": sizes["multi"],
        "fusion_vectors": sizes["fusion"],
        "pooled_vectors": sizes["pooled"],
        "ann": ann_bytes,
        "metadata": database_bytes,
    }
