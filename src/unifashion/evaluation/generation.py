"""Image-generation metrics on features: FID and KID.

The feature extractor is named in every result. Offline, the standard Inception weights are not
available, so the default extractor is EfficientNet-Lite0's pooled features ("FID-EffLite0"):
numbers are comparable with each other, not with published Inception FIDs. With the standard
Inception network in a local file (:class:`unifashion.evaluation.features.InceptionFeatures`),
:func:`library_fid_kid` computes FID and KID through torchmetrics, a maintained library; the
hand-written :func:`fid` and :func:`kid` below are tested against it on the same features.
"""

from __future__ import annotations

import warnings

import numpy as np


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix, by ``eigh``.

    Eigenvalues below zero (round-off of a singular covariance) are clipped to zero, so the root
    is always real; ``psd_sqrt(A) @ psd_sqrt(A) == A`` for any PSD ``A``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for covariances S1, S2, as Tr((S1^(1/2) S2 S1^(1/2))^(1/2)).

    S1 S2 is not symmetric, but it is similar to the PSD matrix S1^(1/2) S2 S1^(1/2), so both
    have the same eigenvalues: the trace of the root is the sum of their square roots. This
    needs only symmetric eigen-decompositions (no general ``sqrtm``, no complex round-off)."""
    root1 = psd_sqrt(sigma1)
    inner = root1 @ np.asarray(sigma2, dtype=np.float64) @ root1
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (n >= 2, dim), got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Fréchet distance of two Gaussians."""
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def fid(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """FID between two feature sets (rows are samples)."""
    mu1, s1 = _moments(real_features)
    mu2, s2 = _moments(fake_features)
    return frechet_distance(mu1, s1, mu2, s2)


def kid(real_features: np.ndarray, fake_features: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
    averaged over random subsets. Returns (mean, std)."""
    real = np.asarray(real_features, dtype=np.float64)
    fake = np.asarray(fake_features, dtype=np.float64)
    d = real.shape[1]
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = real[rng.choice(real.shape[0], m, replace=False)]
        y = fake[rng.choice(fake.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def library_fid_kid(real_features: np.ndarray, fake_features: np.ndarray, kid_subsets: int = 100,
                    kid_subset_size: int = 1000) -> dict[str, float]:
    """FID and KID (mean, std) of two feature sets through torchmetrics (a maintained library):
    its ``FrechetInceptionDistance`` and ``KernelInceptionDistance``, fed features already
    extracted (an identity feature module), so any extractor can be used and the numbers are the
    library's. KID's kernel is the same cubic polynomial as :func:`kid`."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real = torch.as_tensor(np.asarray(real_features, dtype=np.float64))
    fake = torch.as_tensor(np.asarray(fake_features, dtype=np.float64))
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be two (n, dim) arrays of one width, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    fid_metric = FrechetInceptionDistance(feature=_identity_features(real.shape[1]), reset_real_features=True)
    fid_metric.set_dtype(torch.float64)
    fid_metric.update(real, real=True)
    fid_metric.update(fake, real=False)
    size = min(kid_subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # it warns that it keeps every feature: these are already in memory
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid_metric = KernelInceptionDistance(feature=_identity_features(real.shape[1]), subsets=kid_subsets,
                                             subset_size=size)
    kid_metric.update(real, real=True)
    kid_metric.update(fake, real=False)
    kid_mean, kid_std = kid_metric.compute()
    return {"fid": float(fid_metric.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def _identity_features(num_features: int):
    """A feature module that returns its input: torchmetrics runs its feature module on what
    ``update`` is given, which here are features already extracted."""
    import torch

    class IdentityFeatures(torch.nn.Module):
        def forward(self, x):
            return x

    module = IdentityFeatures()
    module.num_features = num_features  # read by torchmetrics instead of probing with a dummy image
    return module
