"""The scoring kernels of the index: fp16 storage, max-sim and caption-fusion inner products,
and ranking.

An item's score for a unit query e is max-sim, ``max_q <e, Z_q>``; composed retrieval adds
caption fusion, ``+ fusion_weight * <e, Z_C>``, formed by
:func:`~unifashion.objectives.fusion.fused_score` (the one function for that sum, shared with the
model and the evaluation); every search path (the exact scan, the re-rank of ANN candidates, one
query or a batch) calls it. Vectors are stored as float16 and read back exactly as float32 by :func:`fp16_to_f32`;
queries are scored as unit vectors (:func:`unit_queries`) and :func:`ranked` multiplies their
norms back in.
"""

from __future__ import annotations

import numpy as np
import torch

from unifashion.objectives.fusion import fused_score

# Up to this many queries, inner products run as one matrix-vector product per query on the
# calling thread instead of a BLAS matmul (see _inner_products).
_MATVEC_MAX_QUERIES = 4
# Items converted and scored per step: 16 x 32 x 256 float32 = 512 KiB stays in the core's cache.
# Profiled here on 800 candidates: converting them in one 26 MiB block took 8 ms, in blocks of 16
# items 4.5 ms with the products (the fresh large buffer's page faults cost more than the work).
_SCORE_ITEMS = 16

# fp16 storage flushes values below fp16's smallest normal number (2^-14 ~ 6.1e-5) to zero, as
# indexes have always been written (their stored bits stay comparable across versions).
_FP16_MIN_NORMAL = np.float16(2.0**-14)


def to_fp16_storage(values: np.ndarray) -> np.ndarray:
    """``values`` as stored: float16, with values below fp16's smallest normal flushed to zero."""
    stored = values.astype(np.float16)
    stored[np.abs(stored) < _FP16_MIN_NORMAL] = 0
    return stored


def fp16_to_f32(stored: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``stored.astype(float32)``, exactly, written into ``out`` when given.

    numpy converts float16 one element at a time (~2 ns each here); torch's conversion is
    vectorised (F16C), about 3x faster. torch reads the array in place, so a read-only one (a
    memory-mapped segment) is copied first.
    """
    if not (stored.flags.writeable and stored.flags.c_contiguous):
        stored = np.array(stored, order="C")
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    torch.from_numpy(out).copy_(torch.from_numpy(stored.view(np.int16)).view(torch.float16))
    return out


def unit_queries(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit queries as (dim, Q) float32, and the norms to multiply scores back by."""
    norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    unit = queries / norms[:, None].astype(np.float32)
    return np.ascontiguousarray(unit.T, dtype=np.float32), norms


def _inner_products(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n, dim) @ (dim, Q) -> (n, Q).

    For a few queries this is a matrix-vector product, for which numpy's BLAS wakes its worker
    threads; on a busy 2-core machine that costs ~8 ms per call (measured here), 20x the product
    itself. torch's ``mv`` does not pay that (800 candidates x 32 vectors: the whole re-rank
    scored in 3.8 ms here, against 6.4 ms with numpy's bit-level conversion and einsum).
    """
    if queries.shape[1] <= _MATVEC_MAX_QUERIES:
        matrix = torch.from_numpy(vectors)
        columns = [torch.mv(matrix, torch.from_numpy(np.ascontiguousarray(q))).numpy() for q in queries.T]
        return np.stack(columns, axis=1)
    return vectors @ queries


def maxsim_block(stored_multi: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Max-sim of a block of stored items against queries.

    stored_multi: (n, num_queries, dim) float16; queries: (dim, Q) float32 unit queries
    (:func:`unit_queries`). Returns (n, Q) of ``max_q <unit query, Z_q>``, scored
    ``_SCORE_ITEMS`` items at a time through one reused float32 buffer.
    """
    n, num_queries, dim = stored_multi.shape
    out = np.empty((n, queries.shape[1]), dtype=np.float32)
    buffer = np.empty((min(n, _SCORE_ITEMS), num_queries, dim), dtype=np.float32)
    for start in range(0, n, _SCORE_ITEMS):
        chunk = stored_multi[start : start + _SCORE_ITEMS]
        count = len(chunk)
        vectors = fp16_to_f32(chunk, buffer[:count]).reshape(count * num_queries, dim)
        out[start : start + count] = _inner_products(vectors, queries).reshape(count, num_queries, -1).max(axis=1)
    return out


def fusion_block(stored_fusion: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n, Q) inner products of stored fusion vectors (n, dim) with unit queries."""
    return _inner_products(fp16_to_f32(stored_fusion), queries)


def ranked(
    keys: np.ndarray, maxsim: np.ndarray, fusion: np.ndarray, fusion_weight: float, norm: float, top_k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Un-scale scores by the query norm and order best first (ties: earlier-added item first).

    Returns the ``top_k`` best (keys, scores, maxsim, fusion).
    """
    maxsim = (maxsim.astype(np.float64) * norm).astype(np.float32)
    fusion = (fusion.astype(np.float64) * norm).astype(np.float32)
    scores = fused_score(maxsim, fusion, fusion_weight)
    order = np.lexsort((keys, -scores))[:top_k]
    return keys[order], scores[order], maxsim[order], fusion[order]
