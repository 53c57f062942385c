"""Image -> texts at scale: a bank of text vectors ranked by ``max_q <Z_q, e_text>``.

An image is ``num_queries`` vectors Z_q; a text's score is the best of their inner products with
its one vector e_text. The texts of highest score are therefore among the nearest texts of some
single Z_q: :class:`TextIndex` asks an IVF-PQ fast-scan index (the one vector_ann.py uses) for
each Z_q's nearest texts, pools them, and scores the pool exactly from the text vectors, which it
keeps in RAM (float32, ``dim * 4`` bytes per text; the bank of an image -> text search lives in
RAM anyway). Banks below :data:`BRUTE_FORCE_TEXTS` texts are scored exhaustively.
"""

from __future__ import annotations

import faiss
import numpy as np

from unifashion.index.ann import faiss_threads
from unifashion.index.vector_ann import _SAMPLE_POINTS_PER_CENTROID, _TRAIN_POINTS_PER_CENTROID, _ivf
from unifashion.settings import SEARCH

#: Up to this many texts a search scores every text (about 2 ms at 20k x 256 x 32 here).
BRUTE_FORCE_TEXTS = 20_000


def rank_exact(text_matrix: np.ndarray, image_queries: np.ndarray, top_k: int,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``text_matrix`` (T, D) (or only ``rows`` of it) by ``max_q <Z_q, e_text>`` for one
    image's ``image_queries`` (Q, D): the ``top_k`` row numbers, best first, and their scores."""
    if rows is None:
        rows = np.arange(len(text_matrix))
        candidates = text_matrix  # no copy of the whole bank
    else:
        candidates = text_matrix[rows]
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = (candidates @ image_queries.T).max(axis=1)
    count = min(top_k, len(scores))
    best = np.argpartition(-scores, count - 1)[:count] if count < len(scores) else np.arange(len(scores))
    best = best[np.lexsort((rows[best], -scores[best]))]  # ties: the earlier text first
    return rows[best].astype(np.int64), scores[best]


class TextIndex:
    """The texts of a bank, searchable by an image's query vectors (see the module docstring).

    ``ann``: an IVF made earlier (a restarted process reads it back: :meth:`serialized_ann`).
    ``ann_holds_matrix``: it holds exactly these vectors, in this order, and is used as it is;
    otherwise its trained quantisers are kept and it is refilled with the matrix, unless the bank
    has grown past twice the texts it was trained on (then a new one is trained: its lists would
    be too long).
    """

    def __init__(self, text_matrix: np.ndarray, *, nlist: int | None = None, pq_m: int | None = None,
                 nprobe: int = SEARCH.text_nprobe, hits: int = SEARCH.text_hits, ann=None,
                 ann_trained_on: int = 0, ann_holds_matrix: bool = False):
        self.matrix = np.ascontiguousarray(text_matrix, dtype=np.float32)
        self.nprobe, self.hits = nprobe, hits
        self.ann = None
        self.trained_on = 0  # texts the IVF's quantisers were trained on
        self.retrained = False  # whether this bank trained its IVF (False: reused or none)
        count, dim = self.matrix.shape if self.matrix.ndim == 2 else (0, 0)
        if count <= BRUTE_FORCE_TEXTS:
            return
        if ann is not None and ann.d == dim and ann.is_trained and 0 < count <= 2 * ann_trained_on:
            self.ann, self.trained_on = ann, ann_trained_on
            if ann_holds_matrix and ann.ntotal == count:
                return
            self.ann.reset()
            self.ann.add(self.matrix)
            return
        # About 1000 texts per list; the IVF needs 39 training points per list.
        nlist = nlist or max(16, min(count // 1000, count // _TRAIN_POINTS_PER_CENTROID))
        most = pq_m or max(1, dim // 2)  # one 4-bit sub-quantiser per 2 dims, as vector_ann
        pq_m = max(m for m in range(1, min(most, dim) + 1) if dim % m == 0)
        self.ann = _ivf(dim, nlist, nprobe, pq_m)
        rng = np.random.default_rng(0)
        sample = min(count, _SAMPLE_POINTS_PER_CENTROID * nlist)
        self.ann.train(self.matrix[np.sort(rng.choice(count, size=sample, replace=False))])
        self.ann.add(self.matrix)
        self.trained_on, self.retrained = count, True

    def serialized_ann(self) -> np.ndarray | None:
        """The IVF as bytes (uint8), for :func:`deserialize_ann`; None when the bank has none."""
        return None if self.ann is None else faiss.serialize_index(self.ann)

    def __len__(self) -> int:
        return len(self.matrix)

    @property
    def ram_bytes(self) -> int:
        """Bytes of the text vectors plus the ANN codes and lists' ids."""
        ann = 0 if self.ann is None else self.ann.ntotal * (self.ann.code_size + 8)
        return self.matrix.nbytes + ann

    def search(self, image_queries: np.ndarray, top_k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` texts (row numbers, best first) for one image's (Q, D) query vectors,
        and their exact scores. ``exact`` scores every text."""
        if self.ann is None or exact:
            return rank_exact(self.matrix, image_queries, top_k)
        queries = np.ascontiguousarray(image_queries, dtype=np.float32)
        with faiss_threads(1):
            # FAISS's fast-scan search returns garbage for nprobe > nlist (measured): clamp.
            params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, self.ann.nlist))
            _scores, ids = self.ann.search(queries, max(self.hits, top_k), params=params)
        pool = np.unique(ids[ids >= 0])
        return rank_exact(self.matrix, queries, top_k, pool)


def deserialize_ann(data: np.ndarray):
    """The IVF of :meth:`TextIndex.serialized_ann` (FAISS's own format, not a pickle)."""
    return faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
