"""Segment files: the immutable, memory-mapped vector files of an index.

Each ``add`` writes one new *segment* of two ``.npy`` files under ``vectors/``::

    vectors/seg-000007.multi.npy    (rows, num_queries, dim) float16, memory-mapped
    vectors/seg-000007.fusion.npy   (rows, dim) float16, memory-mapped

so committing never rewrites the (large) multi-vectors of earlier items. A segment is written
and fsynced in full before any manifest names it (step 1 of the commit protocol, see
generations.py) and never changed afterwards. Deleted items leave dead rows behind, which
compaction (:func:`write_compacted_segment`) drops by copying the live rows into a new segment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unifashion.atomic import fsync_path
from unifashion.index.store import Layout
from unifashion.index.validation import stored_vectors

VECTORS_DIR = "vectors"
SEGMENT_PARTS = ("multi", "fusion")

# Items written per step of ``add`` (4096 x 16 KiB = 64 MiB of fp16 multi-vectors).
_WRITE_CHUNK = 4096
# ``add`` shows a progress bar from this many items (unless told otherwise).
_PROGRESS_MIN_ITEMS = 10_000

#: Test hook: when set, called with a stage name ("segment_chunk_written", "segment_written",
#: "before_manifest_switch", the last from generations.switch_generation) so that crash tests
#: can kill the process at a known point. Never set in normal use.
_crash_test_pause: Callable[[str], None] | None = None


def crash_test_point(stage: str) -> None:
    """A point where crash tests may stop the process (see ``_crash_test_pause``)."""
    if _crash_test_pause is not None:
        _crash_test_pause(stage)


def segment_paths(folder: Path, segment_id: int) -> dict[str, Path]:
    stem = folder / VECTORS_DIR / f"seg-{segment_id:06d}"
    return {part: stem.with_name(f"{stem.name}.{part}.npy") for part in SEGMENT_PARTS}


def remove_segment_files(folder: Path, segment_id: int) -> None:
    """Delete a segment's files (those that exist); only for segments no manifest names."""
    for path in segment_paths(folder, segment_id).values():
        path.unlink(missing_ok=True)


def _open_npy_for_writing(path: Path, dtype: np.dtype, shape: tuple[int, ...]):
    """Open a .npy file whose rows the caller then writes in order (streaming, no big buffer)."""
    handle = open(path, "wb")  # noqa: SIM115 - closed by the caller
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(handle, header)
    return handle


class SegmentWriter:
    """Streams one new segment's .npy files row block by row block.

    ``finish`` flushes and fsyncs them (and the folder); ``abort`` deletes them. Either way no
    committed manifest names them yet: they become part of the index only at commit.
    """

    def __init__(self, folder: Path, segment_id: int, count: int, num_queries: int, dim: int):
        self.folder = folder
        self.segment_id = segment_id
        self.paths = segment_paths(folder, segment_id)
        self.shapes = {"multi": (num_queries, dim), "fusion": (dim,)}
        self.dtypes = {"multi": np.float16, "fusion": np.float16}
        self.handles = {}
        try:
            for part, path in self.paths.items():
                path.unlink(missing_ok=True)  # an orphan of a crashed writer may hold this name
                self.handles[part] = _open_npy_for_writing(path, self.dtypes[part], (count, *self.shapes[part]))
        except BaseException:
            self.abort()
            raise

    def write(self, part: str, block: np.ndarray) -> None:
        assert block.dtype == self.dtypes[part] and block.shape[1:] == self.shapes[part]
        self.handles[part].write(np.ascontiguousarray(block).tobytes())

    def finish(self) -> None:
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        fsync_path(self.folder / VECTORS_DIR)

    def abort(self) -> None:
        for handle in self.handles.values():
            handle.close()
        remove_segment_files(self.folder, self.segment_id)


@dataclass
class Segment:
    """One immutable segment's memory-mapped files."""

    segment_id: int
    multi: np.ndarray  # (rows, num_queries, dim) float16
    fusion: np.ndarray  # (rows, dim) float16

    @property
    def rows(self) -> int:
        return self.multi.shape[0]


def open_segment(folder: Path, segment_id: int, rows: int, num_queries: int, dim: int) -> Segment:
    paths = segment_paths(folder, segment_id)
    arrays = {}
    expected = {"multi": (rows, num_queries, dim), "fusion": (rows, dim)}
    for part, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"vector file missing: {path}")
        arrays[part] = np.load(path, mmap_mode="r")
        if arrays[part].shape != expected[part]:
            raise ValueError(f"{path} has shape {arrays[part].shape}, the manifest expects {expected[part]}")
    return Segment(segment_id, arrays["multi"], arrays["fusion"])


def by_segment(segment_ids: np.ndarray, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Group items by segment: (segment id, positions of its items ordered by row) per segment.

    One sort instead of a pass per segment (an index may hold thousands of small segments), and
    row order makes each memory-mapped read sequential.
    """
    if len(segment_ids) == 0:
        return []
    order = np.lexsort((rows, segment_ids))
    boundaries = np.flatnonzero(np.diff(segment_ids[order])) + 1
    return [(int(segment_ids[group[0]]), group) for group in np.split(order, boundaries)]


def write_segment(
    folder: Path,
    segment_id: int,
    item_ids: list[str],
    multi_vectors: Any,
    fusion_vectors: Any,
    normalize: bool,
    progress: bool | None,
    num_queries: int,
    dim: int,
) -> None:
    """Validate and write one new segment's files, chunk by chunk, and fsync them.

    Each chunk's vectors are checked (finite; unit norm unless ``normalize``), normalised if
    asked and stored as float16 (:func:`~unifashion.index.validation.stored_vectors`;
    ``fusion_vectors`` None, items without captions, stores zero caption vectors). On any
    failure the files are deleted.
    """
    count = len(item_ids)
    show = count >= _PROGRESS_MIN_ITEMS if progress is None else progress
    writer = SegmentWriter(folder, segment_id, count, num_queries, dim)
    try:
        with tqdm(total=count, unit="item", desc="indexing", disable=not show) as bar:
            for start in range(0, count, _WRITE_CHUNK):
                stop = min(start + _WRITE_CHUNK, count)
                fusion = None if fusion_vectors is None else fusion_vectors[start:stop]
                multi, fusion = stored_vectors(multi_vectors[start:stop], fusion, item_ids, start, normalize, dim)
                writer.write("multi", multi)
                writer.write("fusion", fusion)
                bar.update(stop - start)
                crash_test_point("segment_chunk_written")
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    crash_test_point("segment_written")


def write_compacted_segment(
    folder: Path, segment_id: int, layout: Layout, segments: dict[int, Segment], num_queries: int, dim: int
) -> None:
    """Copy every live item's vectors, in ``layout`` order, into one new segment and fsync it.
    On any failure the new files are deleted."""
    count = len(layout.keys)
    writer = SegmentWriter(folder, segment_id, count, num_queries, dim)
    try:
        for start in range(0, count, _WRITE_CHUNK):
            stop = min(start + _WRITE_CHUNK, count)
            rows = layout.rows[start:stop]
            groups = by_segment(layout.segments[start:stop], rows)
            for part in SEGMENT_PARTS:
                block = np.empty((stop - start, *writer.shapes[part]), dtype=writer.dtypes[part])
                for sid, members in groups:
                    block[members] = getattr(segments[sid], part)[rows[members]]
                writer.write(part, block)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
