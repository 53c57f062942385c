"""Committed generations: the snapshot a search reads, and the commit protocol that replaces it.

A *generation* is what one commit made visible: the manifest (in ``catalogue.sqlite``, see
store.py) names its vector segments (segments.py) and its FAISS files::

    ann/ann-g000012.faiss             the base FAISS index, written whole by generation 12
    ann/ann-g000012.fused.faiss       the index of fused vectors (vector_ann.py)
    ann/ann-g000012.empty.faiss       the same indexes as trained, without vectors: the template
    ann/ann-g000012.fused.empty.faiss of each later delta
    ann/delta-g000013.faiss           the vectors that generation 13 added (and .fused.faiss)

Updates are append-only. A commit encodes the vectors of the items it adds with the trained
quantisers into a *delta* (a copy of the template) and writes only that, so a commit's bytes grow
with what it adds, not with the index. The manifest lists the deltas since the base; items deleted
since the base are listed in the ``ann_removed`` table (their vectors stay in the files until the
next base). Opening a generation reads the base, merges each delta into it
(:func:`~unifashion.index.ann.merge_into`, which equals adding the vectors directly) and removes
the vectors of ``ann_removed`` in memory, so the index searched is the same as one built over the
live items. When the deltas (or the removed items' vectors) pass :data:`DELTA_FRACTION` of the
base, the commit writes a new base instead (compaction), so the bytes written while an index grows
stay proportional to its final size. Training the IVF (the first commit with enough items),
``rebuild_ann`` and ``compact`` write a new base too.

A :class:`Snapshot` is one generation opened in memory: its segments memory-mapped, its FAISS
indexes loaded (base + deltas - removed), and per-row lookups for the exact scan.

Crash safety. ``commit`` (1) writes and fsyncs the new segment files (``add`` already did) and the
new FAISS file(s) (a delta, or a base) under names no committed manifest refers to, then (2)
changes the item rows, the removed keys and the manifest in one SQLite transaction. The
transaction is the switch: if the process dies before it, the previous generation is intact and
the new files are orphans, which the next commit deletes; after it, the new generation is
complete on disk. Readers open whatever the manifest names, and because the manifest and the item
rows change together, metadata and vectors agree. Files are only ever deleted once no manifest
names them; a reader in another process that still maps them keeps reading them (POSIX unlink
semantics).

Here: :func:`commit_generation`, :func:`compact_generation` and :func:`rebuild_generation` make
the three kinds of new generation; step (1)'s FAISS files are written by :func:`next_ann_state`
(:func:`write_ann_base`, :func:`write_ann_delta`), step (2) is :func:`switch_generation`, the
clean-up of orphans and superseded files is :func:`remove_stale_files`, and :func:`load_snapshot`
opens whatever the manifest names (a reader that already holds the previous generation reads only
the new deltas).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from unifashion.atomic import fsync_path
from unifashion.index.ann import AnnConfig, build_ann, merge_into, needs_training, new_ann
from unifashion.index.errors import CatalogueIndexError
from unifashion.index.segments import (
    VECTORS_DIR,
    Segment,
    by_segment,
    crash_test_point,
    open_segment,
    remove_segment_files,
    segment_paths,
    write_compacted_segment,
)
from unifashion.index.store import DATABASE_NAME, ItemRow, Layout, Manifest, MetadataStore
from unifashion.index.vector_ann import VectorAnn

ANN_DIR = "ann"
#: A commit writes a new base FAISS file instead of a delta once the deltas since the base (or the
#: vectors of items deleted since) would exceed this fraction of the base's vectors. Each base
#: write then follows growth by this fraction, so the bytes written over an index's growth are
#: about (1 + 1 / DELTA_FRACTION) times its final ANN size.
DELTA_FRACTION = 0.25
# The part suffix of a base file's template (see the module docstring).
_TEMPLATE = "empty"


@dataclass
class AnnState:
    """The FAISS side of one generation, in memory."""

    index: VectorAnn  # base + deltas - removed; FAISS ids are item keys
    template: VectorAnn  # the same, trained and empty: the start of every delta
    removed: np.ndarray  # sorted keys in the ann_removed table
    base_vectors: int  # vectors in the base file (main part)
    delta_vectors: int  # vectors in the manifest's delta files (main part)


@dataclass
class Snapshot:
    """Everything a search needs about one committed generation. Never mutated after commit,
    except the FAISS index, which only a commit of the same instance changes (under its lock)."""

    manifest: Manifest
    layout: Layout
    segments: dict[int, Segment]
    ann: VectorAnn  # ann_state.index
    ann_state: AnnState
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


def make_snapshot(manifest: Manifest, layout: Layout, segments: dict[int, Segment], ann: AnnState) -> Snapshot:
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
        ann=ann.index,
        ann_state=ann,
        key_category=codes,
        category_names=names,
        category_codes={n: i for i, n in enumerate(names)},
        row_keys=row_keys,
        row_categories=row_categories,
    )


def load_snapshot(
    folder: Path, store: MetadataStore, num_queries: int, dim: int, previous: Snapshot | None = None
) -> Snapshot:
    """Open the generation the manifest names: its segments and its FAISS index.

    ``previous``: a snapshot this caller holds and will drop. When the new generation only
    appended deltas to its base, the new deltas are merged into ``previous``'s FAISS index (which
    is changed in place) instead of reading the whole base again."""
    # A writer may commit (and delete the previous generation's files) between our reading
    # the manifest and opening its files; then the files are gone but a newer manifest
    # exists, so read again.
    for _attempt in range(10):
        manifest, layout, removed = store.read_committed()
        try:
            segments = {sid: open_segment(folder, sid, rows, num_queries, dim) for sid, rows in manifest.segments}
            ann = _load_ann(folder, store, manifest, removed, num_queries, dim, previous)
        except FileNotFoundError:
            previous = None  # untouched (files are read before anything is merged); read in full
            if store.generation() != manifest.generation:
                continue
            raise
        return make_snapshot(manifest, layout, segments, ann)
    raise CatalogueIndexError(f"{folder} kept changing while being opened")


def _extends(previous: Snapshot | None, manifest: Manifest) -> bool:
    """Whether ``manifest`` is ``previous``'s generation plus deltas (same base, same kind)."""
    if previous is None or not manifest.ann_file:
        return False
    old = previous.manifest
    return (old.ann_file == manifest.ann_file and old.ann_kind == manifest.ann_kind
            and manifest.ann_deltas[: len(old.ann_deltas)] == old.ann_deltas)


def _load_ann(
    folder: Path, store: MetadataStore, manifest: Manifest, removed: np.ndarray, num_queries: int, dim: int,
    previous: Snapshot | None,
) -> AnnState:
    config = AnnConfig.from_config(store.config())
    if not manifest.ann_file:  # nothing committed yet: an empty, flat stage
        empty = new_ann(config, dim)
        return AnnState(empty, empty.empty_copy(), np.empty(0, dtype=np.int64), 0, 0)
    if _extends(previous, manifest):
        state = previous.ann_state
        new_deltas = manifest.ann_deltas[len(previous.manifest.ann_deltas):]
        parts = tuple(state.index.parts())
        weight = state.index.fused_weight
        deltas = [_read_ann(folder, name, parts, weight) for name in new_deltas]  # may raise: nothing changed yet
        base, template, base_vectors = state.index, state.template, state.base_vectors
        delta_vectors = state.delta_vectors
        newly_removed = np.setdiff1d(removed, state.removed)
    else:
        # The fused part exists when the base was written with a fused weight other than 0.
        parts = tuple(p for p in ("", "fused") if p == "" or ann_part_path(folder, manifest.ann_file, p).is_file())
        weight = config.fused_weight
        base = _read_ann(folder, manifest.ann_file, parts, weight)
        template = _read_ann(folder, manifest.ann_file, parts, weight, template=True)
        deltas = [_read_ann(folder, name, parts, weight) for name in manifest.ann_deltas]
        base_vectors, delta_vectors = base.stored_vectors, 0
        newly_removed = removed
    for delta in deltas:
        delta_vectors += delta.stored_vectors
        merge_into(base, delta)
    base.remove(newly_removed)
    return AnnState(base, template, removed, base_vectors, delta_vectors)


def _template_part(part: str) -> str:
    return _TEMPLATE if not part else f"{part}.{_TEMPLATE}"


def _read_ann(folder: Path, name: str, parts: Sequence[str], fused_weight: float, template: bool = False) -> VectorAnn:
    """The FAISS files of one base or delta (or a base's template) as a stage."""
    read = {part: _read_faiss(ann_part_path(folder, name, _template_part(part) if template else part))
            for part in parts}
    return VectorAnn.from_parts(read, fused_weight)


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


def delta_file_name(generation: int) -> str:
    return f"delta-g{generation:06d}.faiss"


def _write_faiss(path: Path, index: Any) -> None:
    path.unlink(missing_ok=True)  # an orphan of a crashed commit
    faiss.write_index(index, str(path))
    fsync_path(path)


def write_ann_base(folder: Path, ann: VectorAnn, template: VectorAnn, generation: int) -> str:
    """Step (1) for a new base: write and fsync generation ``generation``'s FAISS file(s) and
    their template; returns the name of the main file (the others lie beside it, see
    :func:`ann_part_path`)."""
    name = ann_file_name(generation)
    templates = template.parts()
    for part, index in ann.parts().items():
        _write_faiss(ann_part_path(folder, name, part), index)
        _write_faiss(ann_part_path(folder, name, _template_part(part)), templates[part])
    fsync_path(folder / ANN_DIR)
    crash_test_point("ann_base_written")
    return name


def write_ann_delta(folder: Path, delta: VectorAnn, generation: int) -> str:
    """Step (1) for a delta: write and fsync the FAISS file(s) of the vectors a commit adds."""
    name = delta_file_name(generation)
    for part, index in delta.parts().items():
        _write_faiss(ann_part_path(folder, name, part), index)
    fsync_path(folder / ANN_DIR)
    crash_test_point("ann_delta_written")
    return name


@dataclass(frozen=True)
class AnnFiles:
    """What the manifest of a new generation records about its FAISS side."""

    ann_file: str
    ann_kind: str
    ann_deltas: tuple[str, ...]
    #: keys to add to the ann_removed table, or None to empty it (a new base was written)
    removed: list[int] | None


def new_base(folder: Path, ann: VectorAnn, template: VectorAnn, generation: int) -> tuple[AnnState, AnnFiles]:
    """Write ``ann`` as the base of generation ``generation`` (no deltas, nothing removed)."""
    name = write_ann_base(folder, ann, template, generation)
    state = AnnState(ann, template, np.empty(0, dtype=np.int64), ann.stored_vectors, 0)
    return state, AnnFiles(name, ann.kind, (), None)


def next_ann_state(
    folder: Path,
    snap: Snapshot,
    config: AnnConfig,
    dim: int,
    num_queries: int,
    layout: Layout,
    kept: int,
    deleted: np.ndarray,
    segments: dict[int, Segment],
    generation: int,
) -> tuple[AnnState, AnnFiles]:
    """Step (1) of a commit for the FAISS side: the next generation's index in memory and the
    files that hold it, written (a delta, or a new base; see the module docstring).

    ``layout`` lists the next generation's live items, the first ``kept`` of them carried over,
    the rest new; ``deleted`` are the keys removed. ``snap``'s index is updated in place, so after
    a failure the caller must reload the committed state from disk.
    """
    state = snap.ann_state
    if needs_training(state.index, config, len(layout.keys), num_queries):
        index, template = build_ann(config, dim, layout, segments)
        return new_base(folder, index, template, generation)
    delta = state.template.empty_copy()
    delta.add(layout.keys[kept:], layout.segments[kept:], layout.rows[kept:], segments)
    state.index.remove(deleted)
    removed = np.union1d(state.removed, deleted).astype(np.int64)
    added = delta.stored_vectors
    limit = DELTA_FRACTION * state.base_vectors
    if state.delta_vectors + added > limit or len(removed) * num_queries > limit:
        merge_into(state.index, delta)
        return new_base(folder, state.index, state.template, generation)
    deltas = snap.manifest.ann_deltas
    if added:
        deltas = (*deltas, write_ann_delta(folder, delta, generation))
        merge_into(state.index, delta)
    next_state = AnnState(state.index, state.template, removed, state.base_vectors, state.delta_vectors + added)
    return next_state, AnnFiles(snap.manifest.ann_file, state.index.kind, deltas, deleted.tolist())


def commit_generation(
    folder: Path,
    store: MetadataStore,
    snap: Snapshot,
    config: AnnConfig,
    pending_segments: Sequence[tuple[int, int]],
    new_rows: Sequence[ItemRow],
    deleted: np.ndarray,
    next_key: int,
    next_segment: int,
    num_queries: int,
    dim: int,
) -> Snapshot:
    """Commit staged changes on top of ``snap``: the new items ``new_rows`` (sorted by key) in the
    already written ``pending_segments`` (id, rows), the keys ``deleted``; returns the new
    generation's snapshot. ``snap``'s FAISS index is updated in place, so after a failure the
    caller must reload the committed state from disk."""
    generation = snap.manifest.generation + 1
    # The live items after this commit: the committed ones not deleted, plus the staged.
    layout, kept = next_layout(snap.layout, deleted, new_rows)
    live_segments = set(np.unique(layout.segments).tolist())
    segment_list = tuple((sid, rows) for sid, rows in (*snap.manifest.segments, *pending_segments)
                         if sid in live_segments)
    segments = {sid: seg for sid, seg in snap.segments.items() if sid in live_segments}
    for sid, rows in pending_segments:
        if sid in live_segments:
            segments[sid] = open_segment(folder, sid, rows, num_queries, dim)
    ann, files = next_ann_state(folder, snap, config, dim, num_queries, layout, kept, deleted, segments, generation)
    manifest = Manifest(generation=generation, segments=segment_list, ann_file=files.ann_file,
                        ann_kind=files.ann_kind, next_key=next_key, next_segment=next_segment,
                        ann_deltas=files.ann_deltas)
    switch_generation(store, manifest, deleted_keys=deleted.tolist(), new_rows=new_rows, ann_removed=files.removed)
    return make_snapshot(manifest, layout, segments, ann)


def compact_generation(folder: Path, store: MetadataStore, snap: Snapshot, next_key: int, segment_id: int,
                       num_queries: int, dim: int) -> Snapshot | None:
    """Commit ``snap``'s live vectors rewritten into one new segment ``segment_id`` and its FAISS
    index as one new base (when it has deltas or removed keys); returns the new snapshot, or
    None when there is nothing to compact. On failure the new segment's files are deleted."""
    count = snap.size
    ann_compact = bool(snap.manifest.ann_deltas or len(snap.ann_state.removed))
    if count == 0 or (len(snap.segments) == 1 and snap.size == next(iter(snap.segments.values())).rows
                      and not ann_compact):
        return None
    write_compacted_segment(folder, segment_id, snap.layout, snap.segments, num_queries, dim)
    generation = snap.manifest.generation + 1
    try:
        layout = Layout(keys=snap.layout.keys, segments=np.full(count, segment_id, dtype=np.int64),
                        rows=np.arange(count, dtype=np.int64), categories=snap.layout.categories)
        segments = {segment_id: open_segment(folder, segment_id, count, num_queries, dim)}
        # The FAISS index is keyed by item key, so moving rows leaves it valid: it is only
        # rewritten, as one base, to merge its deltas and drop deleted vectors.
        ann, files = snap.ann_state, None
        if ann_compact:
            ann, files = new_base(folder, snap.ann, snap.ann_state.template, generation)
        manifest = Manifest(
            generation=generation,
            segments=((segment_id, count),),
            ann_file=files.ann_file if files else snap.manifest.ann_file,
            ann_kind=snap.manifest.ann_kind,
            next_key=next_key,
            next_segment=segment_id + 1,
            ann_deltas=files.ann_deltas if files else snap.manifest.ann_deltas,
        )
        moved = list(zip([segment_id] * count, range(count), snap.layout.keys.tolist(), strict=True))
        switch_generation(store, manifest, moved_rows=moved, ann_removed=files.removed if files else ())
    except BaseException:
        remove_segment_files(folder, segment_id)
        raise
    return make_snapshot(manifest, layout, segments, ann)


def rebuild_generation(folder: Path, store: MetadataStore, snap: Snapshot, config: AnnConfig, next_key: int,
                       next_segment: int, dim: int) -> Snapshot:
    """Commit a FAISS stage of ``config`` built anew over ``snap``'s live items (and ``config`` as
    the index's ANN settings); returns the new snapshot."""
    index, template = build_ann(config, dim, snap.layout, snap.segments)
    ann, files = new_base(folder, index, template, snap.manifest.generation + 1)
    manifest = Manifest(generation=snap.manifest.generation + 1, segments=snap.manifest.segments,
                        ann_file=files.ann_file, ann_kind=files.ann_kind, next_key=next_key,
                        next_segment=next_segment)
    switch_generation(store, manifest, config_updates=config.as_config(), ann_removed=None)
    return make_snapshot(manifest, snap.layout, snap.segments, ann)


def switch_generation(store: MetadataStore, manifest: Manifest, **changes: Any) -> None:
    """Step (2): the one SQLite transaction that changes the item rows (``changes``, see
    :meth:`MetadataStore.apply`) and makes ``manifest`` the committed one. Every file it names
    must already be on disk, fsynced."""
    crash_test_point("before_manifest_switch")
    store.apply(manifest, **changes)


def ann_paths(folder: Path, manifest: Manifest) -> list[Path]:
    """Every FAISS file a manifest may name (base, its fused part, their templates, the deltas),
    whether or not it exists."""
    if not manifest.ann_file:
        return []
    base_parts = ("", "fused", _template_part(""), _template_part("fused"))
    paths = [ann_part_path(folder, manifest.ann_file, part) for part in base_parts]
    for name in manifest.ann_deltas:
        paths.extend(ann_part_path(folder, name, part) for part in ("", "fused"))
    return paths


def remove_stale_files(folder: Path, manifest: Manifest, pending_segments: Iterable[tuple[int, int]]) -> None:
    """Delete vector and FAISS files that neither the manifest nor staged changes name:
    superseded generations and the leftovers of crashed writers."""
    wanted = set(ann_paths(folder, manifest))
    for sid, _rows in (*manifest.segments, *pending_segments):
        wanted.update(segment_paths(folder, sid).values())
    for sub in (VECTORS_DIR, ANN_DIR):
        for path in (folder / sub).iterdir():
            if path not in wanted:
                path.unlink(missing_ok=True)


def bytes_on_disk(folder: Path, snap: Snapshot) -> dict[str, int]:
    """The sizes of a generation's files, by kind (the metadata database with its WAL files)."""
    sizes = {"multi": 0, "fusion": 0}
    for sid in snap.segments:
        for part, path in segment_paths(folder, sid).items():
            sizes[part] += path.stat().st_size
    ann_bytes = sum(p.stat().st_size for p in ann_paths(folder, snap.manifest) if p.is_file())
    database_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(DATABASE_NAME))
    return {
        "multi_vectors": sizes["multi"],
        "fusion_vectors": sizes["fusion"],
        "ann": ann_bytes,
        "metadata": database_bytes,
    }
