"""Max-sim search of one committed snapshot, and its results (:class:`Hit`).

Two paths, both scoring with the kernels of kernels.py (every score is
:func:`~unifashion.objectives.fusion.fused_score`):

- :func:`search_exact` scores every live item, chunked over items (bounded memory) and over
  queries;
- :func:`search_ann` asks the ANN stage (ann.py) for candidate items (by their best vector),
  then scores exactly those candidates.

Both return, per query, ``(keys, scores, maxsim, fusion)`` best first; :func:`attach_metadata`
turns them into :class:`Hit` lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from unifashion.index.ann import candidate_keys, key_selector
from unifashion.index.generations import Snapshot
from unifashion.index.kernels import fusion_block, maxsim_block, ranked, unit_queries
from unifashion.index.segments import by_segment
from unifashion.index.store import ItemMetadata, MetadataStore
from unifashion.index.validation import unknown_category_error
from unifashion.objectives.fusion import fused_score

# Items scored per step of an exact search: small enough that the converted float32 block
# (256 x 32 x 256 x 4 B = 8 MiB) stays near the cache (3.8 us/item here against 5.2 at 512).
_SCORE_CHUNK = 256
# Queries scored together in an exact search, bounding the (items x queries) score block.
_QUERY_BLOCK = 256

Ranking = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # keys, scores, maxsim, fusion


@dataclass(frozen=True)
class Hit:
    """One search result. ``rank`` starts at 1; ``score = maxsim + fusion_weight * fusion``.

    ``fusion`` (the caption-fusion inner product) is only computed when ``fusion_weight`` is not
    0; otherwise it is 0.
    """

    item_id: str
    score: float
    rank: int
    maxsim: float
    fusion: float
    metadata: ItemMetadata

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "score": self.score,
            "rank": self.rank,
            "maxsim": self.maxsim,
            "fusion": self.fusion,
            "metadata": self.metadata.to_dict(),
        }


def category_code(snap: Snapshot, category: str | None) -> int:
    """The snapshot's code of ``category``, -1 for None; ValueError for a category it lacks."""
    if category is None:
        return -1
    if category in snap.category_codes:
        return snap.category_codes[category]
    raise unknown_category_error(category, snap.category_names)


def search_exact(
    snap: Snapshot, queries: np.ndarray, top_k: int, fusion_weight: float, category_code: int
) -> list[Ranking]:
    """Score every live item: chunked over items (bounded memory) and over queries."""
    unit, norms = unit_queries(queries)
    num = len(queries)
    best_scores = np.empty((num, 0), dtype=np.float32)
    best_maxsim = np.empty((num, 0), dtype=np.float32)
    best_fusion = np.empty((num, 0), dtype=np.float32)
    best_keys = np.empty((num, 0), dtype=np.int64)
    for sid, segment in snap.segments.items():
        live = snap.row_keys[sid] >= 0
        if category_code >= 0:
            live &= snap.row_categories[sid] == category_code
        for start in range(0, segment.rows, _SCORE_CHUNK):
            stop = min(start + _SCORE_CHUNK, segment.rows)
            chunk_live = np.flatnonzero(live[start:stop])
            if len(chunk_live) == 0:
                continue
            maxsim = np.empty((stop - start, num), dtype=np.float32)
            multi = segment.multi[start:stop]
            for q0 in range(0, num, _QUERY_BLOCK):
                maxsim[:, q0 : q0 + _QUERY_BLOCK] = maxsim_block(multi, unit[:, q0 : q0 + _QUERY_BLOCK])
            maxsim = maxsim[chunk_live].T  # (Q, live items of the chunk)
            if fusion_weight:
                fusion = fusion_block(segment.fusion[start:stop][chunk_live], unit).T
            else:
                fusion = np.zeros_like(maxsim)
            keys = np.broadcast_to(snap.row_keys[sid][start:stop][chunk_live], maxsim.shape)
            best_scores = np.concatenate([best_scores, fused_score(maxsim, fusion, fusion_weight)], axis=1)
            best_maxsim = np.concatenate([best_maxsim, maxsim], axis=1)
            best_fusion = np.concatenate([best_fusion, fusion], axis=1)
            best_keys = np.concatenate([best_keys, keys], axis=1)
            if best_scores.shape[1] > top_k:
                keep = np.argpartition(-best_scores, top_k - 1, axis=1)[:, :top_k]
                best_scores = np.take_along_axis(best_scores, keep, axis=1)
                best_maxsim = np.take_along_axis(best_maxsim, keep, axis=1)
                best_fusion = np.take_along_axis(best_fusion, keep, axis=1)
                best_keys = np.take_along_axis(best_keys, keep, axis=1)
    return [ranked(best_keys[i], best_maxsim[i], best_fusion[i], fusion_weight, norms[i], top_k) for i in range(num)]


def search_ann(
    snap: Snapshot,
    queries: np.ndarray,
    top_k: int,
    candidates: int,
    fusion_weight: float,
    category_code: int,
    nprobe: int,
) -> list[Ranking]:
    """ANN candidates, then exact max-sim (+ fusion) of those candidates from the stored vectors."""
    population = snap.size if category_code < 0 else int(np.count_nonzero(snap.key_category == category_code))
    k = min(candidates, population)
    if k == 0:
        empty = (np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.float32), np.empty(0, np.float32))
        return [empty for _ in range(len(queries))]
    selector = None
    if category_code >= 0:
        if category_code not in snap.selectors:
            snap.selectors[category_code] = key_selector(snap.layout.keys[snap.key_category == category_code])
        selector = snap.selectors[category_code]
    proposed = candidate_keys(snap.ann, queries, k, selector, nprobe, fusion_weight)

    unit, norms = unit_queries(queries)
    results = []
    for i in range(len(queries)):
        keys, multi, fusion_vectors = gather_candidates(snap, proposed[i], bool(fusion_weight))
        maxsim = maxsim_block(multi, unit[:, i : i + 1])[:, 0]
        if fusion_weight:
            fusion = fusion_block(fusion_vectors, unit[:, i : i + 1])[:, 0]
        else:
            fusion = np.zeros(len(keys), dtype=np.float32)
        results.append(ranked(keys, maxsim, fusion, fusion_weight, norms[i], top_k))
    return results


def gather_candidates(
    snap: Snapshot, keys: np.ndarray, with_fusion: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The candidates' stored vectors read into one block, segment by segment in row order:
    ``(keys in that order, multi (n, num_queries, dim) float16, fusion (n, dim) float16 or None)``.

    One block scored at once instead of one small block per segment (a 1M-item index spreads 800
    candidates over ~120 segments, and the per-call costs were a third of the re-rank).
    """
    segment_ids, rows = snap.locate(keys)
    groups = by_segment(segment_ids, rows)
    order = np.concatenate([members for _sid, members in groups]) if groups else np.empty(0, dtype=np.int64)
    shape = next(iter(snap.segments.values())).multi.shape[1:] if snap.segments else (0, 0)
    multi = np.empty((len(keys), *shape), dtype=np.float16)
    fusion = np.empty((len(keys), shape[1]), dtype=np.float16) if with_fusion else None
    start = 0
    for sid, members in groups:
        segment, stop = snap.segments[sid], start + len(members)
        np.take(segment.multi, rows[members], axis=0, out=multi[start:stop], mode="clip")
        if fusion is not None:
            np.take(segment.fusion, rows[members], axis=0, out=fusion[start:stop], mode="clip")
        start = stop
    return keys[order], multi, fusion


def attach_metadata(store: MetadataStore, snap: Snapshot, results: list[Ranking]) -> list[list[Hit]] | None:
    """Attach metadata; None if the committed generation moved on since ``snap``."""
    all_keys = {int(k) for keys, *_ in results for k in keys}
    metadata = store.metadata_by_key(all_keys, snap.manifest.generation)
    if metadata is None:
        return None
    hits = []
    for keys, scores, maxsim, fusion in results:
        hits.append(
            [
                Hit(
                    item_id=metadata[int(key)].item_id,
                    score=float(scores[r]),
                    rank=r + 1,
                    maxsim=float(maxsim[r]),
                    fusion=float(fusion[r]),
                    metadata=metadata[int(key)],
                )
                for r, key in enumerate(keys)
            ]
        )
    return hits
