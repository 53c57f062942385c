"""The ANN candidate stage of an index, keyed by item key: its settings, and how it is built,
updated and searched.

The stage (vector_ann.py) indexes every item vector, so that grouping its hits by item finds the
items of highest max-sim, and keeps a second index of fused vectors for composed queries. It is
exact (flat) until the index holds :meth:`AnnConfig.min_train_items` items, and an IVF trained on
the stored vectors from the first commit that reaches that size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from unifashion.index.segments import Segment
from unifashion.index.store import Layout
from unifashion.index.validation import check_fused_weight, check_positive_int
from unifashion.index.vector_ann import (
    VECTORS,
    VECTORS_FLAT,
    VectorAnn,
    build_vector_ann,
    empty_vector_ann,
    min_train_items,
)

#: The candidate stages an index config may name (``"ann"``): the vector-level one.
ANN_KINDS = (VECTORS,)

# How many vector hits the ANN stage asks FAISS for per candidate item (how many candidates:
# unifashion.settings.SEARCH, chosen by benchmarks/bench_search.py).
VECTOR_HITS_PER_CANDIDATE = 8
# Below this many queries a FAISS search runs on one thread (see faiss_threads).
_FAISS_SINGLE_THREAD_QUERIES = 20


@dataclass(frozen=True)
class AnnConfig:
    """The ANN settings of an index, as its config table stores them (kind as ``"ann"``)."""

    kind: str
    nlist: int
    nprobe: int
    pq_m: int
    #: The caption-fusion weight w of the fused index (Z_q + w Z_C); 0: none.
    fused_weight: float = 1.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AnnConfig:
        return cls(config["ann"], config["nlist"], config["nprobe"], config["pq_m"], config["fused_weight"])

    def as_config(self) -> dict[str, Any]:
        """The entries of the index's config table."""
        return {"ann": self.kind, "nlist": self.nlist, "nprobe": self.nprobe, "pq_m": self.pq_m,
                "fused_weight": self.fused_weight}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def min_train_items(self, num_queries: int) -> int:
        """Live items needed before the IVF can be trained on their vectors."""
        return min_train_items(self.nlist, num_queries)


def check_ann_config(kind: str, nlist: int, nprobe: int, pq_m: int, dim: int, fused_weight: float = 1.0) -> AnnConfig:
    """Checked ANN settings for vectors of ``dim``."""
    if kind not in ANN_KINDS:
        raise ValueError(f"unknown ANN kind {kind!r}; choose one of {', '.join(ANN_KINDS)}")
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("pq_m", pq_m)):
        check_positive_int(value, name)
    if dim % pq_m:
        raise ValueError(f"pq_m={pq_m} must divide the vector dimension {dim}")
    check_fused_weight(fused_weight)
    return AnnConfig(kind, int(nlist), int(nprobe), int(pq_m), float(fused_weight))


def new_ann(config: AnnConfig, dim: int) -> VectorAnn:
    """An empty (flat, untrained) stage of ``config``."""
    return empty_vector_ann(dim, config.fused_weight)


def build_ann(config: AnnConfig, dim: int, layout: Layout, segments: dict[int, Segment]) -> tuple[VectorAnn, VectorAnn]:
    """The stage of ``config`` over every live item, trained on their vectors when there are
    enough of them, and an empty copy of it as trained (the template of later deltas)."""
    return build_vector_ann(config.nlist, config.nprobe, config.pq_m, config.fused_weight, dim, layout, segments)


def needs_training(current: VectorAnn, config: AnnConfig, live_items: int, num_queries: int) -> bool:
    """Whether the next commit should train the IVF: the stage is still flat and the catalogue
    has grown enough."""
    return current.kind == VECTORS_FLAT and live_items >= config.min_train_items(num_queries)


def merge_into(ann: VectorAnn, delta: VectorAnn) -> None:
    """Move ``delta``'s vectors (same trained quantisers) into ``ann``; ``delta`` is left empty.
    Entries go to the end of each list, so the result equals adding them to ``ann`` directly."""
    targets = ann.parts()
    for part, index in delta.parts().items():
        merge_index(targets[part], index)


def merge_index(target: Any, source: Any) -> None:
    """``target.merge_from(source)`` for two FAISS indexes of the same trained quantisers
    (fast-scan IVF ones around a FAISS bug, :func:`_merge_fast_scan`)."""
    if isinstance(source, faiss.IndexIVFFastScan):
        _merge_fast_scan(target, source)
    else:
        target.merge_from(source, 0)


def _merge_fast_scan(target: Any, source: Any) -> None:
    """``target.merge_from(source)`` for fast-scan IVF indexes, around a FAISS bug.

    FAISS's BlockInvertedLists::add_entries (which merge_from calls) copies whole blocks when the
    target list's length is a multiple of the block size in bytes, but to ``o * code_size`` with
    code_size = INVALID_CODE_SIZE: for a non-empty list it writes outside the buffer (heap
    corruption, measured here with FAISS 1.15.1). Empty and other lists take its correct paths; a
    list of that length is block-aligned (the block size is a multiple of the 32 codes of a
    block), so its merged codes are its blocks followed by the source's, which are written into
    the list emptied first (the whole-block copy at offset 0 is correct).
    """
    target_lists = faiss.downcast_InvertedLists(target.invlists)
    source_lists = faiss.downcast_InvertedLists(source.invlists)
    block_size, per_block = target_lists.block_size, target_lists.n_per_block
    for list_no in range(source_lists.nlist):
        count = source_lists.list_size(list_no)
        if count == 0:
            continue
        source_bytes = -(-count // per_block) * block_size
        ids = faiss.rev_swig_ptr(source_lists.get_ids(list_no), count)
        codes = faiss.rev_swig_ptr(source_lists.get_codes(list_no), source_bytes)
        present = target_lists.list_size(list_no)
        if present == 0 or present % block_size:
            target_lists.add_entries(list_no, count, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
            continue
        kept_bytes = present // per_block * block_size
        all_ids = np.concatenate([faiss.rev_swig_ptr(target_lists.get_ids(list_no), present), ids])
        all_codes = np.concatenate([faiss.rev_swig_ptr(target_lists.get_codes(list_no), kept_bytes), codes])
        target_lists.resize(list_no, 0)
        target_lists.add_entries(list_no, present + count, faiss.swig_ptr(all_ids), faiss.swig_ptr(all_codes))
    target.ntotal += source.ntotal
    source.reset()


@contextmanager
def faiss_threads(count: int) -> Iterator[None]:
    """Run FAISS calls made from this thread on ``count`` OpenMP threads, then restore.

    A search for a few queries gains nothing from FAISS's worker threads, but waking them costs
    milliseconds when the cores are busy, and their spin-waiting afterwards slows numpy's BLAS
    threads (measured here on 2 cores: 8 ms vs 0.9 ms per single-query search over 10k items).
    OpenMP's thread count is per calling thread, so this does not affect other threads.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def key_selector(keys: np.ndarray) -> Any:
    """A FAISS ID selector that admits only ``keys`` (e.g. the items of one category)."""
    return faiss.IDSelectorBatch(keys)


def candidate_keys(
    ann: VectorAnn, queries: np.ndarray, k: int, selector: Any, nprobe: int, fusion_weight: float = 0.0
) -> list[np.ndarray]:
    """Per query, the keys of (up to) ``k`` candidate items, best first: the nearest item vectors
    grouped by item, of the fused vectors when ``fusion_weight`` is the weight they were fused
    with. ``nprobe`` only matters once the IVF is trained.
    """
    threads = 1 if len(queries) < _FAISS_SINGLE_THREAD_QUERIES else faiss.omp_get_max_threads()
    fused = ann.fused is not None and fusion_weight == ann.fused_weight
    with faiss_threads(threads):
        return ann.search(queries, k, k * VECTOR_HITS_PER_CANDIDATE, selector, nprobe, fused)
