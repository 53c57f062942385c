"""Shared pieces of the serving tests: a small catalogue, an index of it, and test images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import build_small_model
from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files
from unifashion.pipelines import build_index

N_ITEMS = 30

# Scores come from fp16-stored vectors; unit vectors of dim 16 lose ~1e-3 in an inner product.
SCORE_TOL = 5e-3


def build_discriminative_model(seed: int = 0):
    """The small random model of conftest.py, with its attention weights (Q-Former self- and
    cross-attention) and the vision patch embedding re-drawn at std 0.5.

    At the usual init (std 0.02) the residual stream swamps what the attention adds: the small
    model's embeddings of different images then differ by ~3e-4, less than fp16 storage rounds
    off, so every ranking would "match" a brute-force one. With these weights scores spread over
    ~0.2 and texts embed differently, so ranking tests mean something.
    """
    model = build_small_model(seed).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            attention = ".attention." in name or "crossattention" in name or "patch_embedding" in name
            if attention and name.endswith("weight") and "LayerNorm" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def build_test_catalogue(folder: Path) -> Path:
    """The embedded catalogue with 30 items (rendered in well under a second)."""
    build_catalogue_files(folder, CatalogueConfig(n_items=N_ITEMS), progress=False)
    return folder


def build_test_index(model, catalogue_dir: Path, index_dir: Path, split: str | None = None):
    return build_index(model, catalogue_dir, index_dir, split=split, batch_size=16, progress=False)


def make_image(seed: int = 0, size: tuple[int, int] = (40, 36)) -> Image.Image:
    """A random RGB image (width, height) = size."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_bytes(seed: int = 0, size: tuple[int, int] = (40, 36)) -> bytes:
    buffer = io.BytesIO()
    make_image(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_same_ranking(hits, ids, scores, top_k):
    """Hits (``item_id``, ``score``, ``rank``) carry the brute-force ``scores`` of their items,
    in order, and are the brute-force top k (up to near-ties, which fp16 storage may swap)."""
    by_id = dict(zip(ids, scores, strict=True))
    assert np.ptp(scores) > 20 * SCORE_TOL  # scores that differ: a ranking that could be wrong
    assert len(hits) == min(top_k, len(ids))
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    for hit in hits:
        assert hit.score == pytest.approx(by_id[hit.item_id], abs=SCORE_TOL)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    expected = np.sort(scores)[::-1][:top_k]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=SCORE_TOL)
