"""FID and KID (torchmetrics', the only implementation) against references computed another way:
the Fréchet distance through SciPy's matrix square root, the closed form for two Gaussians, and the
unbiased MMD^2 written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from unifashion.evaluation.generation import fid, kid


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def numpy_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with KID's cubic kernel (x.y / d + 1)^3, over all of x and y."""
    d, m, n = x.shape[1], len(x), len(y)
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_fid_matches_scipy_on_two_small_gaussian_feature_sets():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 24))
    fake = rng.normal(loc=0.2, scale=1.3, size=(150, 24))
    assert fid(real, fake) == pytest.approx(scipy_fid(real, fake), rel=1e-6)
    assert fid(real, fake) > 1.0
    assert fid(real, real) == pytest.approx(0.0, abs=1e-6)


def test_fid_approaches_the_closed_form_of_two_gaussians():
    # N(0, I) against N(0.5, 1.2^2 I) in 4 dimensions: ||mu||^2 + d (1 - 1.2)^2 = 1.16.
    rng = np.random.default_rng(4)
    value = fid(rng.normal(size=(20000, 4)), rng.normal(loc=0.5, scale=1.2, size=(20000, 4)))
    assert value == pytest.approx(4 * 0.25 + 4 * 0.04, abs=0.05)


def test_fid_with_fewer_samples_than_dimensions_matches_scipy():
    # The demo's case: 16 generated images, 1280-d features; singular covariances.
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(16, 40)), rng.normal(loc=0.1, size=(16, 40))
    value = fid(real, fake)
    assert np.isfinite(value) and value == pytest.approx(scipy_fid(real, fake), rel=1e-4)


def test_kid_over_one_subset_of_every_sample_is_the_unbiased_mmd():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(120, 8)), rng.normal(loc=0.4, size=(120, 8))
    mean, std = kid(real, fake, n_subsets=1, subset_size=1000)  # capped at 120: every sample, any order
    assert mean == pytest.approx(numpy_mmd2(real, fake), rel=1e-6) and std == 0.0


def test_kid_subsets_are_drawn_from_the_seed_and_leave_torchs_generator_alone():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(300, 8)), rng.normal(loc=1.0, size=(300, 8))
    state = torch.get_rng_state()
    first = kid(real, fake, n_subsets=20, subset_size=50, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert kid(real, fake, n_subsets=20, subset_size=50, seed=1) == first
    assert kid(real, fake, n_subsets=20, subset_size=50, seed=2) != first
    # Subsets of the same distribution give ~0, of different ones a clearly positive MMD^2.
    same, _ = kid(real, rng.normal(size=(300, 8)), n_subsets=20, subset_size=50)
    assert abs(same) < 0.1 and first[0] > 0.5


def test_feature_sets_are_checked():
    with pytest.raises(ValueError, match="one width"):
        fid(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        kid(np.zeros((1, 3)), np.zeros((4, 3)))
