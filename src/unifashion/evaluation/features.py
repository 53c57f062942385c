"""Image features for FID/KID: EfficientNet-Lite0's pooled ImageNet features, or Inception from a file.

Offline there are no standard Inception weights, so FID here defaults to EfficientNet-Lite0
(labelled "FID-EffLite0" everywhere); a user with the standard weights as a local TorchScript
file can pass it and get the standard "FID-Inception".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class EffLiteFeatures:
    """1280-d global-average-pooled EfficientNet-Lite0 head features of images in [0, 1]."""

    name = "EffLite0"

    def __init__(self, image_size: int = 128):
        from unifashion.models.config import VisionConfig
        from unifashion.models.vision import build_vision_encoder

        self.config = VisionConfig(image_size=image_size, mid_level_features=False, colour_statistics=False)
        self.encoder = build_vision_encoder(self.config)
        self.encoder.freeze()
        self.mean = torch.tensor(self.config.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.config.image_std).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].float()
            x = F.interpolate(x, size=self.config.image_size, mode="bilinear", align_corners=False)
            feats = self.encoder((x - self.mean) / self.std).features
            out.append(feats.mean(dim=1).numpy())
        return np.concatenate(out)


class TorchScriptFeatures:
    """Features from a local TorchScript model file (e.g. the standard FID Inception network)."""

    def __init__(self, path: str | Path, image_size: int = 299, name: str = "Inception"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature extractor file not found: {path}")
        self.model = torch.jit.load(str(path), map_location="cpu").eval()
        self.image_size = image_size
        self.name = name

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = F.interpolate(images[start:start + batch_size].float(), size=self.image_size, mode="bilinear",
                              align_corners=False)
            out.append(self.model(x * 255.0).reshape(len(x), -1).numpy())
        return np.concatenate(out)
