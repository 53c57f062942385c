"""The scoring kernels of the index: fp16 storage, max-sim and caption-fusion inner products,
the fused score, and ranking.

An item's score for a unit query e is max-sim, ``max_q <e, Z_q>``; composed retrieval adds
caption fusion, ``+ fusion_weight * <e, Z_C>``. :func:`fused_score` is the one place that sum is
formed; every search path (the exact scan, the re-rank of ANN candidates, one query or a batch)
calls it. Vectors are stored as float16 and read back with a bit trick (:func:`_fp16_as_scaled_f32`)
that returns them scaled by 2^-112; :func:`scaled_queries` scales the queries by 2^112 to undo it,
and :func:`ranked` multiplies the query norms back in.
"""

from __future__ import annotations

import numpy as np

# Up to this many queries, inner products run as one einsum per query instead of a BLAS matmul.
_EINSUM_MAX_QUERIES = 4

# fp16 storage flushes values below fp16's smallest normal number (2^-14 ~ 6.1e-5) to zero; the
# bit trick of _fp16_as_scaled_f32 then never produces denormal floats, which are slow.
_FP16_MIN_NORMAL = np.float16(2.0**-14)
# _fp16_as_scaled_f32 returns values scaled by 2^-112; queries are scaled by 2^112 to undo it.
_FP16_BIAS_SCALE = np.float32(2.0**112)


def to_fp16_storage(values: np.ndarray) -> np.ndarray:
    """``values`` as stored: float16, with values below fp16's smallest normal flushed to zero."""
    stored = values.astype(np.float16)
    stored[np.abs(stored) < _FP16_MIN_NORMAL] = 0
    return stored


def _fp16_as_scaled_f32(stored: np.ndarray) -> np.ndarray:
    """``stored.astype(float32) * 2**-112``, exactly, about 4x faster than ``astype``.

    numpy converts float16 element by element (~1 GB/s here); this moves the bits instead. An
    fp16 number is sign(1) exponent(5, bias 15) mantissa(10); shifting its low 15 bits left by
    13 places them as exponent and mantissa of a float32 whose exponent is read with bias 127,
    i.e. the value times 2^(15-127). Sign-extending to int32 puts the sign in bit 31 (and junk in
    bits 28-30, masked off). Correct for normal numbers and zero; storage has no subnormals
    (flushed) and no inf/NaN (rejected on add).
    """
    bits = stored.view(np.int16).astype(np.int32)
    bits <<= 13
    bits &= np.int32(-0x70002000)  # 0x8FFFE000: the sign bit and the 15 shifted bits
    return bits.view(np.float32)


def scaled_queries(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit queries times 2^112 as (dim, Q), and the norms to multiply scores back by."""
    norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    scaled = (queries / norms[:, None].astype(np.float32)) * _FP16_BIAS_SCALE
    return np.ascontiguousarray(scaled.T, dtype=np.float32), norms


def _inner_products(vectors: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """(n, dim) @ (dim, Q) -> (n, Q).

    For a few queries this is a matrix-vector product, for which numpy's BLAS wakes its worker
    threads; on a busy 2-core machine that costs ~8 ms per call (measured here), 20x the product
    itself. einsum computes it on the calling thread (0.5 ms for 16k x 256).
    """
    if scaled.shape[1] <= _EINSUM_MAX_QUERIES:
        columns = [np.einsum("nd,d->n", vectors, np.ascontiguousarray(q)) for q in scaled.T]
        return np.stack(columns, axis=1)
    return vectors @ scaled


def maxsim_block(stored_multi: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """Max-sim of a block of stored items against queries.

    stored_multi: (n, num_queries, dim) float16; scaled: (dim, Q) float32, unit queries times
    2^112 (:func:`scaled_queries`). Returns (n, Q) of ``max_q <unit query, Z_q>``.
    """
    n, num_queries, dim = stored_multi.shape
    vectors = _fp16_as_scaled_f32(np.ascontiguousarray(stored_multi)).reshape(n * num_queries, dim)
    return _inner_products(vectors, scaled).reshape(n, num_queries, -1).max(axis=1)


def fusion_block(stored_fusion: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """(n, Q) inner products of stored fusion vectors (n, dim) with scaled unit queries."""
    return _inner_products(_fp16_as_scaled_f32(np.ascontiguousarray(stored_fusion)), scaled)


def fused_score(maxsim: np.ndarray, fusion: np.ndarray, fusion_weight: float) -> np.ndarray:
    """The caption-fusion score ``maxsim + fusion_weight * <e, Z_C>``, in float32.

    The only place the index forms it: the exact scan's running top-k, the re-rank of ANN
    candidates and the final ranking (:func:`ranked`) all call this.
    """
    return maxsim + np.float32(fusion_weight) * fusion


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
