"""Max-sim search of a Milvus-backed index (:class:`MilvusSearch`, a part of
:class:`~unifashion.index.MilvusCatalogueIndex`).

Max-sim is a grouping search. Every item vector is one Milvus row carrying its item's key, so a
search over the vectors grouped by ``item_key`` (Milvus's ``group_by_field``) returns each item's
best vector: its max-sim score. Caption fusion keeps that form at the index's fused weight w,
``max_q <e, Z_q> + w <e, Z_C> = max_q <e, Z_q + w Z_C>``, so composed queries at that weight
search the rows' fused field. At any other weight the plain field proposes the candidates and
the fusion term is added to them, as the local index does. Scores are the engine's inner
products, exact for the index types that keep raw vectors (FLAT, IVF_FLAT, HNSW; FLAT in
milvus-lite's tests); ``exact=True`` scans every row and scores it here with the local index's
kernels, the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unifashion.index.kernels import fusion_block, maxsim_block, ranked, to_fp16_storage, unit_queries
from unifashion.index.milvus_schema import KEYS_PER_QUERY, MAX_LIMIT, item_metadata, keys_filter, quoted
from unifashion.index.snapshot_search import Hit
from unifashion.index.validation import check_search, unknown_category_error


class MilvusSearch:
    """The search methods of :class:`~unifashion.index.MilvusCatalogueIndex`, which provides what
    they read: ``_client``, ``_names``, ``_lock``, ``dim``, ``nprobe``, ``fused_weight``,
    ``captions``, ``folder``, ``categories()``, ``_state()`` and ``_scan()``."""

    _client: Any
    _names: dict[str, str]
    dim: int
    nprobe: int
    fused_weight: float

    def search(self, query: Any, top_k: int = 10, *, candidates: int | None = None, fusion_weight: float = 0.0,
               category: str | None = None, exact: bool = False,
               nprobe: int | None = None) -> list[Hit] | list[list[Hit]]:
        """The ``top_k`` items by ``max_q <e, Z_q> + fusion_weight * <e, Z_C>``, best first (as
        :meth:`CatalogueIndex.search`). ``candidates`` items are proposed by a grouping search
        (default ``settings.SEARCH.candidates_for(top_k)``, as the local index; at most 16384)
        and ranked with the fusion term;
        ``nprobe`` is passed to IVF index types (HNSW searches with ef = max(candidates, 64))."""
        request = check_search(query, self.dim, top_k, candidates, fusion_weight, nprobe, category,
                               captions=self.captions, folder=self.folder, default_nprobe=self.nprobe)
        category = request.category
        with self._lock:
            if category is not None and category not in (known := self.categories()):
                raise unknown_category_error(category, list(known))
            next_key = int(self._state()["next_key"])
            if exact:
                ranked_lists = self._search_exact(request.queries, request.top_k, request.fusion_weight, category,
                                                  next_key)
            else:
                ranked_lists = self._search_grouped(request.queries, request.top_k, min(request.candidates, MAX_LIMIT),
                                                    request.fusion_weight, category, request.nprobe, next_key)
            hits = self._hits(ranked_lists)
        return hits[0] if request.single else hits

    def _filter(self, field: str, category: str | None, next_key: int) -> str:
        text = f"{field} < {next_key}"
        return text if category is None else f"{text} and category == {quoted(category)}"

    def _items_by_key(self, keys: Sequence[int], fields: Sequence[str]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        keys = sorted({int(k) for k in keys})
        for start in range(0, len(keys), KEYS_PER_QUERY):
            batch = keys[start:start + KEYS_PER_QUERY]
            for row in self._client.query(self._names["items"], filter=keys_filter("key", batch),
                                          output_fields=["key", *fields], limit=len(batch)):
                out[int(row["key"])] = row
        return out

    def _search_grouped(self, queries, top_k, candidates, fusion_weight, category, nprobe, next_key):
        fused = self.fused_weight != 0 and fusion_weight == self.fused_weight
        params = {"nprobe": nprobe, "ef": max(candidates, 64)}
        found = self._client.search(
            self._names["vectors"], data=[q for q in queries], anns_field="fused" if fused else "vector",
            limit=candidates, group_by_field="item_key", output_fields=["item_key"],
            filter=self._filter("item_key", category, next_key),
            search_params={"metric_type": "IP", "params": params})
        per_query = [(np.array([h["entity"]["item_key"] for h in row], dtype=np.int64),
                      np.array([h["distance"] for h in row], dtype=np.float32)) for row in found]
        # Z_C of every candidate: the fusion term (and, from the fused score, max-sim).
        items = self._items_by_key([k for keys, _ in per_query for k in keys], ["fusion"]) if fusion_weight else {}
        out = []
        for q, (keys, distances) in enumerate(per_query):
            if fusion_weight:
                present = np.array([int(k) in items for k in keys], dtype=bool)
                keys, distances = keys[present], distances[present]
                fusion_vectors = np.array([items[int(k)]["fusion"] for k in keys], dtype=np.float32)
                fusion = fusion_vectors.reshape(-1, self.dim) @ queries[q]
            else:
                fusion = np.zeros(len(keys), dtype=np.float32)
            # The fused field's distance is the fused score: take the fusion term back out of it.
            maxsim = distances - np.float32(fusion_weight) * fusion if fused else distances
            out.append(ranked(keys, maxsim, fusion, fusion_weight, 1.0, top_k))
        return out

    def _search_exact(self, queries, top_k, fusion_weight, category, next_key):
        """Score every row here, from the stored values, with the local index's kernels."""
        unit, norms = unit_queries(queries)
        best: dict[int, np.ndarray] = {}
        for batch in self._scan("vectors", self._filter("item_key", category, next_key), ["item_key", "vector"],
                                next_key):
            keys = np.array([r["item_key"] for r in batch], dtype=np.int64)
            vectors = to_fp16_storage(np.array([r["vector"] for r in batch], dtype=np.float32))
            scores = maxsim_block(vectors[:, None, :], unit)  # (rows, Q): one vector per "item"
            for key in np.unique(keys):
                row_max = scores[keys == key].max(axis=0)
                best[int(key)] = np.maximum(best[int(key)], row_max) if int(key) in best else row_max
        keys = np.array(sorted(best), dtype=np.int64)
        if len(keys) == 0:
            empty = np.empty(0, np.float32)
            return [(np.empty(0, np.int64), empty, empty, empty) for _ in range(len(queries))]
        maxsim = np.stack([best[int(k)] for k in keys])  # (items, Q)
        fusion = np.zeros_like(maxsim)
        if fusion_weight:
            items = self._items_by_key(keys, ["fusion"])
            keep = np.array([int(k) in items for k in keys], dtype=bool)
            keys, maxsim, fusion = keys[keep], maxsim[keep], fusion[keep]
            stored = to_fp16_storage(np.array([items[int(k)]["fusion"] for k in keys], dtype=np.float32))
            fusion = fusion_block(stored, unit)
        return [ranked(keys, maxsim[:, q], fusion[:, q], fusion_weight, norms[q], top_k) for q in range(len(queries))]

    def _hits(self, ranked_lists) -> list[list[Hit]]:
        items = self._items_by_key([k for keys, *_ in ranked_lists for k in keys], ["item_id", "category", "metadata"])
        hits = []
        for keys, scores, maxsim, fusion in ranked_lists:
            row_hits = []
            for r, key in enumerate(keys):
                if int(key) not in items:  # deleted by a commit in progress
                    continue
                metadata = item_metadata(items[int(key)])
                row_hits.append(Hit(metadata.item_id, float(scores[r]), len(row_hits) + 1, float(maxsim[r]),
                                    float(fusion[r]), metadata))
            hits.append(row_hits)
        return hits
