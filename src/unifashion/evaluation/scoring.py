"""Retrieval scores and CMR protocols computed tile by tile, for galleries of any size.

The max-sim score of N images against M texts is ``max_q <Z_i,q, t_j>``; computed at once it is
an N x M x Q tensor (161 GB for FashionGen's 35.5k test pairs with 32 queries). Here it is
computed in square tiles of ``tile`` images x ``tile`` texts, and the protocols never hold more
than a tile (full gallery) or the N x 100 candidate scores (random-100):

- full gallery (:func:`cmr_full_gallery_tiled`): a first pass computes the diagonal tiles, so
  every text's positive score is known; a second pass counts, tile by tile, the images that score
  at least as high as each text's positive (text -> image) and ranks each image's row (image ->
  text). A tile is always the same computation on the same inputs, so the numbers are exactly
  those of the whole matrix (tested);
- random-100 (:func:`cmr_random_tiled`): only the N x 100 (image, text) pairs that the protocol
  ranks are scored, a chunk of queries at a time.

Scorers give ``tile(i0, i1, t0, t1)`` (images i0:i1 x texts t0:t1) and ``pairs(images, texts)``
(the scores of the pairs (images[k], texts[k])). :class:`MaxSimScorer` reads the images' query
embeddings through a row reader (an on-disk cache, or a tensor), so nothing of size N x Q x D
needs to be in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from unifashion.evaluation.retrieval import CMRResult, random_candidates, recall_at_k
from unifashion.objectives.fusion import fused_score

#: Rows of a gallery's query embeddings: ``rows(indices) -> (len(indices), Q, D)``.
RowReader = Callable[[np.ndarray], torch.Tensor]


def tensor_rows(tensor: torch.Tensor) -> RowReader:
    """A row reader over an in-memory (N, Q, D) tensor (or (N, D), read as one query)."""
    if tensor.ndim == 2:
        tensor = tensor[:, None, :]
    return lambda indices: tensor[torch.as_tensor(np.asarray(indices), dtype=torch.long)]


class MaxSimScorer:
    """``max_q <Z_i,q, t_j>`` (+ ``<c_i, t_j>`` with caption fusion) of images i against texts j.

    ``image_rows`` reads Z rows; ``text_embeds`` (M, D); ``caption_embeds`` (N, D) the images'
    Z_C, or None. Computed on ``text_embeds``' device in float32.
    """

    def __init__(self, image_rows: RowReader, n_images: int, text_embeds: torch.Tensor,
                 caption_embeds: torch.Tensor | None = None):
        self.image_rows = image_rows
        self.n_images = n_images
        self.texts = text_embeds.float()
        self.captions = caption_embeds.float() if caption_embeds is not None else None
        self.device = self.texts.device

    @property
    def n_texts(self) -> int:
        return self.texts.shape[0]

    def _z(self, indices: np.ndarray) -> torch.Tensor:
        return self.image_rows(indices).to(self.device, torch.float32)

    def _exact(self):
        """Scores in float32 even inside an autocast region (ranks compare them to the last bit)."""
        return torch.autocast(self.device.type, enabled=False)

    @torch.no_grad()
    def tile(self, i0: int, i1: int, t0: int, t1: int) -> np.ndarray:
        with self._exact():
            return self._tile(i0, i1, t0, t1)

    def _tile(self, i0: int, i1: int, t0: int, t1: int) -> np.ndarray:
        z = self._z(np.arange(i0, i1))
        texts = self.texts[t0:t1]
        n, q, d = z.shape
        scores = (z.reshape(n * q, d) @ texts.t()).reshape(n, q, -1).amax(dim=1)
        if self.captions is not None:
            scores = fused_score(scores, self.captions[i0:i1] @ texts.t())
        return scores.cpu().numpy()

    @torch.no_grad()
    def pairs(self, images: np.ndarray, texts: np.ndarray, chunk: int = 2048) -> np.ndarray:
        with self._exact():
            return self._pairs(images, texts, chunk)

    def _pairs(self, images: np.ndarray, texts: np.ndarray, chunk: int) -> np.ndarray:
        images, texts = np.asarray(images), np.asarray(texts)
        out = np.empty(len(images), dtype=np.float32)
        # Pairs in image order, so that a chunk reads each of its images' rows once.
        in_order = len(images) < 2 or bool(np.all(images[1:] >= images[:-1]))
        order = None if in_order else np.argsort(images, kind="stable")
        for start in range(0, len(images), chunk):
            picks = np.arange(start, min(start + chunk, len(images))) if order is None else order[start:start + chunk]
            wanted, inverse = np.unique(images[picks], return_inverse=True)
            z = self._z(wanted)[torch.as_tensor(inverse)]
            t = self.texts[torch.as_tensor(texts[picks].astype(np.int64), device=self.device)]
            scores = torch.einsum("pqd,pd->pq", z, t).amax(dim=1)
            if self.captions is not None:
                cap = self.captions[torch.as_tensor(images[picks].astype(np.int64), device=self.device)]
                scores = fused_score(scores, (cap * t).sum(-1))
            out[picks] = scores.cpu().numpy()
        return out

    def full(self, tile: int = 1024) -> np.ndarray:
        """The whole (images x texts) matrix, assembled from tiles (for galleries that fit)."""
        return full_matrix(self, tile)


def full_matrix(scorer, tile: int = 1024) -> np.ndarray:
    """Every score of any scorer (images x texts), assembled from its tiles."""
    out = np.empty((scorer.n_images, scorer.n_texts), dtype=np.float32)
    for i0 in range(0, scorer.n_images, tile):
        for t0 in range(0, scorer.n_texts, tile):
            i1, t1 = min(i0 + tile, scorer.n_images), min(t0 + tile, scorer.n_texts)
            out[i0:i1, t0:t1] = scorer.tile(i0, i1, t0, t1)
    return out


class MatrixScorer:
    """Tiles and pairs of a score matrix already in memory (images x texts)."""

    def __init__(self, scores: np.ndarray):
        self.scores = np.asarray(scores)
        self.n_images, self.n_texts = self.scores.shape

    def tile(self, i0: int, i1: int, t0: int, t1: int) -> np.ndarray:
        return self.scores[i0:i1, t0:t1]

    def pairs(self, images: np.ndarray, texts: np.ndarray) -> np.ndarray:
        return self.scores[np.asarray(images), np.asarray(texts)]


class RandomScorer:
    """Chance level: every tile and pair score an independent uniform draw, reproducible from
    ``seed`` and the tile's (or pairs') position."""

    def __init__(self, n_images: int, n_texts: int, seed: int):
        self.n_images, self.n_texts, self.seed = n_images, n_texts, seed

    def tile(self, i0: int, i1: int, t0: int, t1: int) -> np.ndarray:
        return np.random.default_rng([self.seed, i0, t0]).random((i1 - i0, t1 - t0))

    def pairs(self, images: np.ndarray, texts: np.ndarray) -> np.ndarray:
        first = [int(images[0]), int(texts[0])] if len(images) else []
        return np.random.default_rng([self.seed, len(images), 7, *first]).random(len(images))


def cmr_full_gallery_tiled(scorer, ks: Sequence[int] = (1, 5, 10), tile: int = 1024
                           ) -> tuple[CMRResult, np.ndarray]:
    """The full-gallery CMR protocol for one text per image (text k describes image k), from tiles;
    returns the result and the text -> image ranks. Equals
    :func:`~unifashion.evaluation.retrieval.cmr_full_gallery` on the whole matrix."""
    n = scorer.n_images
    if scorer.n_texts != n:
        raise ValueError(f"one text per image expected, got {n} images and {scorer.n_texts} texts")
    blocks = [(b, min(b + tile, n)) for b in range(0, n, tile)]
    positive = np.empty(n, dtype=np.float64)
    for b0, b1 in blocks:
        positive[b0:b1] = np.diagonal(scorer.tile(b0, b1, b0, b1))
    i2t_ahead = np.zeros(n, dtype=np.int64)
    t2i_ahead = np.zeros(n, dtype=np.int64)
    for i0, i1 in blocks:
        for t0, t1 in blocks:
            scores = np.asarray(scorer.tile(i0, i1, t0, t1), dtype=np.float64)
            if i0 == t0:  # a positive never counts against itself
                np.fill_diagonal(scores, -np.inf)
            i2t_ahead[i0:i1] += np.count_nonzero(scores >= positive[i0:i1, None], axis=1)
            t2i_ahead[t0:t1] += np.count_nonzero(scores >= positive[None, t0:t1], axis=0)
    i2t, t2i = i2t_ahead + 1, t2i_ahead + 1
    return CMRResult("full-gallery", recall_at_k(i2t, ks), recall_at_k(t2i, ks)), t2i


def _rank_of_first_column(scores: np.ndarray) -> np.ndarray:
    """Ranks of column 0 (the positive) in each row: 1 + the other entries scoring at least as
    high, as :func:`~unifashion.evaluation.retrieval.ranks_of_positives` counts them."""
    return 1 + np.count_nonzero(scores[:, 1:] >= scores[:, :1], axis=1)


def cmr_random_tiled(scorer, categories: Sequence[str], ks: Sequence[int] = (1, 5, 10), seed: int = 0,
                     n_candidates: int = 100, candidates: np.ndarray | None = None,
                     chunk: int = 4096) -> CMRResult:
    """The random-N same-category protocol (the candidates of
    :func:`~unifashion.evaluation.retrieval.random_candidates`, or ``candidates`` when the caller
    has drawn them), scoring only the pairs it ranks, ``chunk`` queries at a time. Memory: the
    N x N-candidates index array (int32) and one chunk's pairs, nothing of N x N."""
    cands = random_candidates(categories, n_candidates, seed) if candidates is None else candidates
    cands = np.asarray(cands, dtype=np.int32)
    n = len(cands)
    i2t, t2i = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for q0 in range(0, n, chunk):
        block = cands[q0:q0 + chunk]
        rows = np.repeat(np.arange(q0, q0 + len(block), dtype=np.int32), n_candidates)
        flat = block.reshape(-1)
        # image i against the texts of its candidates; then text i against the images of its candidates
        i2t[q0:q0 + len(block)] = _rank_of_first_column(scorer.pairs(rows, flat).reshape(len(block), n_candidates))
        t2i[q0:q0 + len(block)] = _rank_of_first_column(scorer.pairs(flat, rows).reshape(len(block), n_candidates))
    return CMRResult(f"random-{n_candidates}", recall_at_k(i2t, ks), recall_at_k(t2i, ks), seed=seed)
