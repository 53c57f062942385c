"""FID/KID: the deprecation-free matrix square root against SciPy, the hand-written FID and KID
against torchmetrics (a maintained library) on the same features."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import linalg

from unifashion.evaluation.generation import fid, frechet_distance, kid, library_fid_kid, psd_sqrt, trace_sqrt_product


def _random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d + 3))
    return a @ a.T / a.shape[1]


@pytest.mark.parametrize("d", [1, 3, 17, 64])
def test_psd_sqrt_matches_scipy_sqrtm_on_random_spd_matrices(d):
    rng = np.random.default_rng(d)
    for _ in range(3):
        m = _random_spd(rng, d)
        root = psd_sqrt(m)
        assert np.allclose(root, linalg.sqrtm(m).real, atol=1e-8)
        assert np.allclose(root @ root, m, atol=1e-10)
        assert np.allclose(root, root.T)


def test_trace_of_the_product_root_matches_scipy():
    rng = np.random.default_rng(5)
    for d in (2, 10, 40):
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(linalg.sqrtm(s1 @ s2)).real, rel=1e-8)
    # Singular covariances (fewer samples than dimensions): still real and finite.
    s1, s2 = _random_spd(rng, 30, rank=5), _random_spd(rng, 30, rank=7)
    value = trace_sqrt_product(s1, s2)
    assert np.isfinite(value) and value >= 0


def test_psd_sqrt_rejects_a_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        psd_sqrt(np.ones((2, 3)))


def test_fid_emits_no_deprecation_warning():
    # scipy.linalg.sqrtm(..., disp=False) warns (and goes away in SciPy 1.18).
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(40, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid(a, b)
        frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def test_hand_written_fid_and_kid_match_torchmetrics_on_the_same_features():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 24))
    fake = rng.normal(loc=0.2, scale=1.3, size=(200, 24))
    library = library_fid_kid(real, fake, kid_subsets=1, kid_subset_size=200)
    assert fid(real, fake) == pytest.approx(library["fid"], rel=1e-6)
    # One subset of every sample: the unbiased MMD^2 does not depend on the draw.
    ours, _ = kid(real, fake, n_subsets=1, subset_size=200)
    assert ours == pytest.approx(library["kid_mean"], rel=1e-5)
    assert library_fid_kid(real, real, kid_subsets=1, kid_subset_size=200)["fid"] == pytest.approx(0.0, abs=1e-6)
