"""The ANN candidate stage of an index, keyed by item key.

Two families. ``"vectors"`` (the default, vector_ann.py) indexes every item vector, so that
grouping its hits by item finds the items of highest max-sim; it also keeps an index of fused
vectors for composed queries. The older kinds index one pooled vector per item:

An item's pooled vector is the mean of its multi-vectors, re-normalised (written with its
segment). A search asks FAISS for the ``candidates`` items nearest the query by pooled vector;
their exact max-sim (+ fusion) scores are then computed from the stored multi-vectors. The kinds
(:data:`ANN_KINDS`): ``"flat"`` (exact inner product; ~1 KiB/item), ``"ivf"`` (IndexIVFFlat) and
``"ivfpq"`` (IndexIVFPQ with 8-bit sub-quantisers, ~``pq_m`` B/item). An IVF kind is trained on
the stored pooled vectors once the index holds :meth:`AnnConfig.min_train_items` items; until
then the ANN stage is flat.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from unifashion.index.segments import Segment, by_segment
from unifashion.index.store import Layout
from unifashion.index.validation import check_positive_int
from unifashion.index.vector_ann import (
    VECTORS,
    VECTORS_FLAT,
    VectorAnn,
    build_vector_ann,
    empty_vector_ann,
    min_train_items,
)

ANN_KINDS = ("vectors", "flat", "ivf", "ivfpq")

# Items the ANN stage proposes for re-ranking unless told otherwise. Re-ranking costs ~6 us per
# candidate here; on clustered benchmarks (benchmarks/results/index.md) 100 candidates gave
# recall@10 0.85 (0.36 with ~500 near-duplicates per cluster), 400 gave 0.94 (0.89) for ~2 ms more.
DEFAULT_CANDIDATES = 400
# The same for the vector-level stage, whose candidates are already ranked by their best vector;
# and how many vector hits it asks FAISS for per candidate item. Chosen by
# benchmarks/bench_search.py (results/search.md, trained embeddings, 1M items): composed queries
# need them (their fused index has half the sub-quantisers): 400 candidates gave recall@10 0.95,
# 800 gave 0.99; text queries reach 1.00 with either.
DEFAULT_VECTOR_CANDIDATES = 800
VECTOR_HITS_PER_CANDIDATE = 8
# Pooled vectors added to a FAISS index per call (64 MiB of float32 at dim 256).
_ADD_CHUNK = 4 * 4096
# Below this many queries a FAISS search runs on one thread (see faiss_threads).
_FAISS_SINGLE_THREAD_QUERIES = 20
# FAISS recommends at least 39 training points per centroid.
_TRAIN_POINTS_PER_CENTROID = 39
_PQ_CENTROIDS = 256  # 8-bit product-quantiser codes


@dataclass(frozen=True)
class AnnConfig:
    """The ANN settings of an index, as its config table stores them (kind as ``"ann"``)."""

    kind: str
    nlist: int
    nprobe: int
    pq_m: int
    #: The caption-fusion weight w of the "vectors" kind's fused index (Z_q + w Z_C); 0: none.
    fused_weight: float = 1.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AnnConfig:
        return cls(config["ann"], config["nlist"], config["nprobe"], config["pq_m"], config.get("fused_weight", 1.0))

    def as_config(self) -> dict[str, Any]:
        """The entries of the index's config table."""
        return {"ann": self.kind, "nlist": self.nlist, "nprobe": self.nprobe, "pq_m": self.pq_m,
                "fused_weight": self.fused_weight}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def min_train_items(self, num_queries: int = 1) -> int:
        """Live items needed before this ANN kind can be trained (0 for flat)."""
        if self.kind == "flat":
            return 0
        if self.kind == VECTORS:
            return min_train_items(self.nlist, num_queries)
        needed = _TRAIN_POINTS_PER_CENTROID * self.nlist
        if self.kind == "ivfpq":
            needed = max(needed, _TRAIN_POINTS_PER_CENTROID * _PQ_CENTROIDS)
        return needed


FLAT = AnnConfig("flat", 1, 1, 1)


def check_ann_config(kind: str, nlist: int, nprobe: int, pq_m: int, dim: int, fused_weight: float = 1.0) -> AnnConfig:
    """Checked ANN settings for vectors of ``dim``."""
    if kind not in ANN_KINDS:
        raise ValueError(f"unknown ANN kind {kind!r}; choose one of {', '.join(ANN_KINDS)}")
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("pq_m", pq_m)):
        check_positive_int(value, name)
    if kind in ("ivfpq", VECTORS) and dim % pq_m:
        raise ValueError(f"pq_m={pq_m} must divide the vector dimension {dim}")
    if isinstance(fused_weight, bool) or not isinstance(fused_weight, (int, float)) or not np.isfinite(fused_weight):
        raise ValueError(f"fused_weight must be a finite number, got {fused_weight!r}")
    return AnnConfig(kind, int(nlist), int(nprobe), int(pq_m), float(fused_weight))


def is_vector_kind(built_kind: str) -> bool:
    """Whether a manifest's ANN kind is the vector-level stage (trained or not)."""
    return built_kind in (VECTORS, VECTORS_FLAT)


def new_ann(config: AnnConfig, dim: int) -> Any:
    """An empty FAISS index of ``config``'s kind; IVF kinds still need training."""
    if config.kind == VECTORS:
        return empty_vector_ann(dim, config.fused_weight)
    if config.kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    quantizer = faiss.IndexFlatIP(dim)
    if config.kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, config.nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, config.nlist, config.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = config.nprobe
    return index


def add_pooled(
    ann: Any, keys: np.ndarray, segment_ids: np.ndarray, rows: np.ndarray, segments: dict[int, Segment]
) -> None:
    """Add the pooled vectors of the given items to a FAISS index, segment by segment."""
    for sid, members in by_segment(segment_ids, rows):
        for start in range(0, len(members), _ADD_CHUNK):
            part = members[start : start + _ADD_CHUNK]
            pooled = np.ascontiguousarray(segments[sid].pooled[rows[part]], dtype=np.float32)
            ann.add_with_ids(pooled, keys[part])


def build_ann(config: AnnConfig, dim: int, layout: Layout, segments: dict[int, Segment]) -> tuple[Any, Any]:
    """A FAISS index of ``config``'s kind over every live item, trained on their pooled vectors
    (the vector-level kind: on their vectors), and an empty copy of it as trained (the template
    of later deltas, see :func:`empty_copy`)."""
    if config.kind == VECTORS:
        return build_vector_ann(config.nlist, config.nprobe, config.pq_m, config.fused_weight, dim, layout, segments)
    ann = new_ann(config, dim)
    if config.kind != "flat":
        # FAISS's k-means samples 256 points per centroid; PQ wants 256 per code too.
        sample_size = min(len(layout.keys), max(256 * config.nlist, 256 * _PQ_CENTROIDS))
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(layout.keys), size=sample_size, replace=False))
        training = np.empty((sample_size, dim), dtype=np.float32)
        sample_rows = layout.rows[sample]
        for sid, members in by_segment(layout.segments[sample], sample_rows):
            training[members] = segments[sid].pooled[sample_rows[members]]
        ann.train(training)
    template = faiss.clone_index(ann)
    add_pooled(ann, layout.keys, layout.segments, layout.rows, segments)
    return ann, template


def built_kind(ann: Any, config: AnnConfig) -> str:
    """The kind a manifest records for ``ann`` built from ``config``."""
    return ann.kind if isinstance(ann, VectorAnn) else config.kind


def needs_training(current: Any, current_kind: str, config: AnnConfig, live_items: int, num_queries: int) -> bool:
    """Whether the next commit should train the IVF that ``config`` asks for: the stage is still
    flat and the catalogue has grown enough."""
    if isinstance(current, VectorAnn):
        return current.kind == VECTORS_FLAT and live_items >= config.min_train_items(num_queries)
    return config.kind != "flat" and current_kind == "flat" and live_items >= config.min_train_items()


# -- an ANN as FAISS parts: the same operations for a pooled index and a VectorAnn --------------


def ann_parts(ann: Any) -> dict[str, Any]:
    """The FAISS indexes of an ANN by file suffix ("" for the main one)."""
    return ann.parts() if isinstance(ann, VectorAnn) else {"": ann}


def ann_from_parts(parts: dict[str, Any], like: Any) -> Any:
    """An ANN of the same structure as ``like`` made of ``parts``."""
    return VectorAnn.from_parts(parts, like.fused_weight) if isinstance(like, VectorAnn) else parts[""]


def empty_copy(template: Any) -> Any:
    """A new, empty ANN with ``template``'s trained quantisers (``template`` must be empty:
    cloning copies its lists)."""
    return ann_from_parts({part: faiss.clone_index(index) for part, index in ann_parts(template).items()}, template)


def vectors_per_item(ann: Any, num_queries: int) -> int:
    return num_queries if isinstance(ann, VectorAnn) else 1


def stored_vectors(ann: Any) -> int:
    """Vectors in an ANN's main index."""
    return int(ann_parts(ann)[""].ntotal)


def add_items(ann: Any, keys: np.ndarray, segment_ids: np.ndarray, rows: np.ndarray,
              segments: dict[int, Segment]) -> None:
    """Add the given items' vectors (every vector, or the pooled one) to ``ann``."""
    if isinstance(ann, VectorAnn):
        ann.add(keys, segment_ids, rows, segments)
    else:
        add_pooled(ann, keys, segment_ids, rows, segments)


def remove_keys(ann: Any, keys: np.ndarray) -> None:
    """Remove every vector of the items ``keys`` from ``ann``, in memory."""
    if len(keys) == 0:
        return
    if isinstance(ann, VectorAnn):
        ann.remove(keys)
    else:
        ann.remove_ids(faiss.IDSelectorBatch(np.asarray(keys, dtype=np.int64)))


def merge_into(ann: Any, delta: Any) -> None:
    """Move ``delta``'s vectors (same trained quantisers) into ``ann``; ``delta`` is left empty.
    Entries go to the end of each list, so the result equals adding them to ``ann`` directly."""
    targets = ann_parts(ann)
    for part, index in ann_parts(delta).items():
        if isinstance(index, faiss.IndexIVFFastScan):
            _merge_fast_scan(targets[part], index)
        else:
            targets[part].merge_from(index, 0)


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
    ann: Any, ann_kind: str, queries: np.ndarray, k: int, selector: Any, nprobe: int, fusion_weight: float = 0.0
) -> list[np.ndarray]:
    """Per query, the keys of (up to) ``k`` candidate items, best first.

    The vector-level stage groups the nearest item vectors by item, searching the fused vectors
    when ``fusion_weight`` is the weight they were fused with; the pooled kinds return the
    items nearest by pooled vector. ``ann_kind``: the kind actually built; ``nprobe`` only
    matters for IVF kinds.
    """
    threads = 1 if len(queries) < _FAISS_SINGLE_THREAD_QUERIES else faiss.omp_get_max_threads()
    if isinstance(ann, VectorAnn):
        fused = ann.fused is not None and fusion_weight == ann.fused_weight
        with faiss_threads(threads):
            return ann.search(queries, k, k * VECTOR_HITS_PER_CANDIDATE, selector, nprobe, fused)
    if ann_kind == "flat":
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
    else:
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if selector is not None:
            params.sel = selector
    with faiss_threads(threads):
        _distances, keys = ann.search(queries, k, params=params)
    return [row[row >= 0] for row in keys]
