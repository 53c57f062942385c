"""The vector-level candidate stage: FAISS over every item vector, hits grouped by item.

An item's score for a query vector e is ``max_q <e, Z_q>``, the best of its vectors. So the exact
top items under max-sim are the items of the top hits of one single-vector nearest-neighbour
search over all ``num_queries * N`` item vectors, grouped by item (an item's first hit is its
best vector). The same holds with caption fusion at a fixed weight w, because
``max_q <e, Z_q> + w <e, Z_C> = max_q <e, Z_q + w Z_C>``: a second index over the *fused*
vectors ``Z_q + w Z_C`` answers composed queries at that weight in the same sense.

Both indexes are FAISS IVF with 4-bit product-quantised codes of the residual to the list centre,
scanned by FAISS's SIMD "fast-scan" kernels (:class:`faiss.IndexIVFPQFastScan`): ``pq_m / 2``
bytes per vector plus an 8-byte id. The fused index uses half the plain index's sub-quantisers,
so that both fit 4 KB per item at 32 x 256: the plain one with pq_m = 128 takes 32 * (64 + 8) =
2304 B per item, the fused one 32 * (32 + 8) = 1280 B (benchmarks/results/search.md measures the
recall each gives). Every vector's FAISS id is its item's key, so the 32 vectors of one item share an id
and ``remove_ids`` drops all of them. The codes only rank candidates; the index re-ranks the
best candidate items exactly from their stored fp16 vectors (snapshot_search.py). Until the
catalogue holds enough vectors to train the IVF, both indexes are exact (flat over all vectors).

Adding items encodes their vectors with the trained quantisers (no retraining; each commit's
additions are written as a delta file, generations.py); a catalogue whose distribution moved is
re-trained with ``CatalogueIndex.rebuild_ann``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from unifashion.index.kernels import fp16_to_f32
from unifashion.index.segments import Segment, by_segment
from unifashion.index.store import Layout
from unifashion.objectives.fusion import fused_score

#: The ANN kind of the index config for this stage, and the kinds a manifest records for it.
VECTORS = "vectors"
VECTORS_FLAT = "vectors-flat"  # not trained yet: exact flat search over all vectors

# FAISS recommends at least 39 training points per centroid; k-means samples 256 per centroid.
_TRAIN_POINTS_PER_CENTROID = 39
_SAMPLE_POINTS_PER_CENTROID = 256
# Items whose vectors are converted and added per FAISS call (2048 x 32 x 256 x 4 B = 64 MiB).
_ADD_ITEMS = 2048


def min_train_items(nlist: int, num_queries: int) -> int:
    """Items needed before an IVF with ``nlist`` lists can be trained on their vectors."""
    return -(-_TRAIN_POINTS_PER_CENTROID * nlist // num_queries)


def fused_pq_m(pq_m: int) -> int:
    """Sub-quantisers of the fused index: half the plain index's (when that divides evenly)."""
    return pq_m // 2 if pq_m % 2 == 0 else pq_m


def _flat(dim: int) -> Any:
    # IndexIDMap (not IDMap2) allows the repeated ids of one item's vectors.
    return faiss.IndexIDMap(faiss.IndexFlatIP(dim))


def _ivf(dim: int, nlist: int, nprobe: int, pq_m: int) -> Any:
    index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, pq_m, 4, faiss.METRIC_INNER_PRODUCT)
    index.by_residual = True  # codes of the residual to the list centre: finer than of the vector
    index.nprobe = nprobe
    return index


def _item_vectors(segment: Segment, rows: np.ndarray, fused_weight: float | None) -> np.ndarray:
    """(len(rows) * num_queries, dim) float32: the items' stored vectors, or their fused vectors
    ``Z_q + w Z_C`` when ``fused_weight`` is given."""
    multi = fp16_to_f32(segment.multi[rows])
    if fused_weight is not None:
        fusion = fp16_to_f32(segment.fusion[rows])
        multi = fused_score(multi, fusion[:, None, :], fused_weight)
    return multi.reshape(-1, multi.shape[-1])


@dataclass
class VectorAnn:
    """The plain index (over Z_q) and the fused one (over Z_q + w Z_C; None when w is 0)."""

    plain: Any
    fused: Any | None
    fused_weight: float

    @property
    def kind(self) -> str:
        return VECTORS_FLAT if isinstance(self.plain, faiss.IndexIDMap) else VECTORS

    @property
    def stored_vectors(self) -> int:
        """Vectors in the plain index (each item's ``num_queries``)."""
        return int(self.plain.ntotal)

    def empty_copy(self) -> VectorAnn:
        """A new stage with these trained quantisers; ``self`` must be empty (a template), as
        cloning copies the lists too."""
        return VectorAnn.from_parts({part: faiss.clone_index(index) for part, index in self.parts().items()},
                                    self.fused_weight)

    def parts(self) -> dict[str, Any]:
        """The FAISS indexes by file suffix ("" for the plain one)."""
        return {"": self.plain, **({"fused": self.fused} if self.fused is not None else {})}

    @classmethod
    def from_parts(cls, parts: dict[str, Any], fused_weight: float) -> VectorAnn:
        """The inverse of :meth:`parts`."""
        return cls(parts[""], parts.get("fused"), float(fused_weight))

    def _indexes(self) -> list[tuple[Any, float | None]]:
        out = [(self.plain, None)]
        if self.fused is not None:
            out.append((self.fused, self.fused_weight))
        return out

    def add(self, keys: np.ndarray, segment_ids: np.ndarray, rows: np.ndarray, segments: dict[int, Segment]) -> None:
        """Add every vector of the given items (the fused index gets their fused vectors)."""
        for sid, members in by_segment(segment_ids, rows):
            for start in range(0, len(members), _ADD_ITEMS):
                part = members[start : start + _ADD_ITEMS]
                num_queries = segments[sid].multi.shape[1]
                ids = np.repeat(keys[part], num_queries)
                for index, weight in self._indexes():
                    index.add_with_ids(_item_vectors(segments[sid], rows[part], weight), ids)

    def remove(self, keys: np.ndarray) -> None:
        """Remove every vector of the items ``keys`` (in memory)."""
        if len(keys) == 0:
            return
        selector = faiss.IDSelectorBatch(np.asarray(keys, dtype=np.int64))
        for index, _weight in self._indexes():
            index.remove_ids(selector)

    def search(
        self, queries: np.ndarray, candidates: int, hits: int, selector: Any, nprobe: int, fused: bool
    ) -> list[np.ndarray]:
        """Per query, up to ``candidates`` item keys, best first by the best of their vectors
        among the ``hits`` nearest vectors (of the fused index if ``fused``)."""
        index = self.fused if fused else self.plain
        hits = max(1, min(hits, index.ntotal))
        if self.kind == VECTORS_FLAT:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
        else:
            # FAISS's fast-scan search returns garbage for nprobe > nlist (measured): clamp.
            params = faiss.SearchParametersIVF(nprobe=min(nprobe, index.nlist))
            if selector is not None:
                params.sel = selector
        _scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), hits, params=params)
        return [first_keys(row, candidates) for row in ids]


def first_keys(ids: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` distinct non-negative ids of ``ids``, in order of first appearance."""
    ids = ids[ids >= 0]
    unique, first = np.unique(ids, return_index=True)
    return unique[np.argsort(first, kind="stable")][:count]


def _training_sample(
    layout: Layout, segments: dict[int, Segment], count: int, fused_weight: float | None
) -> np.ndarray:
    """``count`` vectors (plain or fused) of random items and random vector slots."""
    rng = np.random.default_rng(0)
    num_queries = next(iter(segments.values())).multi.shape[1]
    items = min(len(layout.keys), max(1, -(-count // 4)))  # four slots per sampled item
    chosen = np.sort(rng.choice(len(layout.keys), size=items, replace=False))
    sample_rows = layout.rows[chosen]
    out = []
    for sid, members in by_segment(layout.segments[chosen], sample_rows):
        vectors = _item_vectors(segments[sid], sample_rows[members], fused_weight)
        vectors = vectors.reshape(len(members), num_queries, -1)
        slots = rng.integers(0, num_queries, size=(len(members), 4))
        out.append(np.take_along_axis(vectors, slots[:, :, None], axis=1).reshape(-1, vectors.shape[-1]))
    return np.ascontiguousarray(np.concatenate(out)[:count])


def build_vector_ann(
    nlist: int, nprobe: int, pq_m: int, fused_weight: float, dim: int, layout: Layout, segments: dict[int, Segment]
) -> tuple[VectorAnn, VectorAnn]:
    """The vector-level indexes over every live item: IVF (trained on a sample of their vectors)
    once there are enough items, exact flat ones before; and an empty copy of them as trained
    (the template that each commit's delta starts from)."""
    num_queries = next(iter(segments.values())).multi.shape[1] if segments else 1
    trained = len(layout.keys) >= min_train_items(nlist, num_queries)
    indexes = []
    for weight in (None, fused_weight) if fused_weight else (None,):
        if trained:
            index = _ivf(dim, nlist, nprobe, pq_m if weight is None else fused_pq_m(pq_m))
            sample = _training_sample(layout, segments, _SAMPLE_POINTS_PER_CENTROID * nlist, weight)
            index.train(sample)
        else:
            index = _flat(dim)
        indexes.append(index)
    ann = VectorAnn(indexes[0], indexes[1] if len(indexes) > 1 else None, float(fused_weight))
    template = ann.empty_copy()
    ann.add(layout.keys, layout.segments, layout.rows, segments)
    return ann, template


def empty_vector_ann(dim: int, fused_weight: float) -> VectorAnn:
    return VectorAnn(_flat(dim), _flat(dim) if fused_weight else None, float(fused_weight))
