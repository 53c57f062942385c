"""Caption fusion's one score function (objectives/fusion.py) against the sum written out, on
numpy and torch, and the fused-vector identity that the index's fused ANN stage relies on."""

from __future__ import annotations

import numpy as np
import torch

from unifashion.objectives.fusion import fused_score


def test_fused_score_is_maxsim_plus_the_weighted_caption_term_on_numpy_and_torch():
    rng = np.random.default_rng(0)
    maxsim = rng.standard_normal((5, 7)).astype(np.float32)
    caption = rng.standard_normal((5, 7)).astype(np.float32)
    for weight in (0.0, 0.5, 1.0, 2.0):
        expected = maxsim.astype(np.float64) + weight * caption.astype(np.float64)
        got = fused_score(maxsim, caption, weight)
        assert got.dtype == np.float32  # the weight does not promote the arrays
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        tensor = fused_score(torch.from_numpy(maxsim), torch.from_numpy(caption), weight)
        assert tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor.numpy(), got)  # both libraries: the same float32 numbers
    np.testing.assert_array_equal(fused_score(maxsim, caption), maxsim + caption)  # the paper's weight 1


def test_the_fused_vectors_score_max_sim_plus_the_caption_term():
    """max_q <e, Z_q> + w <e, Z_C> = max_q <e, Z_q + w Z_C>: the fused vectors of one item."""
    rng = np.random.default_rng(1)
    multi = rng.standard_normal((4, 8, 16))  # items x queries x dim
    caption = rng.standard_normal((4, 16))
    query = rng.standard_normal(16)
    weight = 0.7
    fused_vectors = fused_score(multi, caption[:, None, :], weight)
    direct = (multi @ query).max(axis=1) + weight * (caption @ query)
    np.testing.assert_allclose((fused_vectors @ query).max(axis=1), direct, rtol=1e-12)
