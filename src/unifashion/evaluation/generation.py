"""Image-generation metrics on features: FID and KID, both computed by torchmetrics (a maintained
library): its ``FrechetInceptionDistance`` and ``KernelInceptionDistance``, fed features already
extracted (an identity feature module), so that any extractor can be used and the numbers are the
library's.

The feature extractor is named in every result. Offline, the standard Inception weights are not
available, so the default extractor is EfficientNet-Lite0's pooled features ("FID-EffLite0"):
numbers are comparable with each other, not with published Inception FIDs. With the standard
Inception network in a local file (:class:`unifashion.evaluation.features.InceptionFeatures`) the
same functions give the standard "FID-Inception".
"""

from __future__ import annotations

import warnings

import numpy as np


def _as_features(real_features: np.ndarray, fake_features: np.ndarray):
    import torch

    real = torch.as_tensor(np.asarray(real_features, dtype=np.float64))
    fake = torch.as_tensor(np.asarray(fake_features, dtype=np.float64))
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be two (n, dim) arrays of one width, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID and KID need at least 2 samples in each set, got {len(real)} and {len(fake)}")
    return real, fake


def fid(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """FID between two feature sets (rows are samples): the Fréchet distance
    ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) of their Gaussians, in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _as_features(real_features, fake_features)
    metric = FrechetInceptionDistance(feature=_identity_features(real.shape[1]), reset_real_features=True)
    metric.set_dtype(real.dtype)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kid(real_features: np.ndarray, fake_features: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
    over ``n_subsets`` random subsets of ``subset_size`` samples (at most the smaller set's size),
    drawn from ``seed``. Returns (mean, std)."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _as_features(real_features, fake_features)
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # it warns that it keeps every feature: these are already in memory
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_identity_features(real.shape[1]), subsets=n_subsets,
                                         subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # the subsets come from torch's global generator: seed it, then restore
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


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
