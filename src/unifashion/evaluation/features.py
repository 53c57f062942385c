"""Image features for FID/KID and CLIP-S: EfficientNet-Lite0's pooled ImageNet features, the
standard Inception from a file, a CLIP model from a folder.

Offline there are no standard Inception weights, so FID here defaults to EfficientNet-Lite0
(labelled "FID-EffLite0" everywhere); a user with the standard weights as a local TorchScript
file can pass it and get the standard "FID-Inception". Either way torchmetrics computes FID and KID
(:mod:`unifashion.evaluation.generation`). A local CLIP folder gives CLIP-S.
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
    """Features from a local TorchScript model file: the standard FID Inception network.

    The standard file is ``inception-2015-12-05.pt`` (the TensorFlow FID Inception as TorchScript,
    published with StyleGAN2-ADA and used by clean-fid and torch-fidelity's TF-compatible path). Its
    ``forward(img, return_features=False)`` takes images in [0, 255] at any size, resizes them to
    299 itself and returns the 1008 logits unless asked for the 2048-d pool features; FID needs the
    features, so a model whose forward takes ``return_features`` is called with it and given the
    images at their own size. Other scripted models get images resized to ``image_size`` and
    their output is used as it is.
    """

    def __init__(self, path: str | Path, image_size: int = 299, name: str = "Inception"):
        path = Path(path)
        if path.is_dir():
            path = path / "inception-2015-12-05.pt"
        if not path.is_file():
            raise FileNotFoundError(f"feature extractor file not found: {path}")
        self.model = torch.jit.load(str(path), map_location="cpu").eval()
        arguments = [a.name for a in self.model.forward.schema.arguments]
        self.takes_return_features = "return_features" in arguments
        self.image_size = image_size
        self.name = name

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].float() * 255.0
            if self.takes_return_features:
                feats = self.model(x, return_features=True)
            else:
                feats = self.model(F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False))
            out.append(feats.reshape(len(x), -1).numpy())
        return np.concatenate(out)


class CLIPScorer:
    """CLIP-S (Hessel et al., 2021, as MGD and the paper report it): 100 x max(cos(image, text), 0)
    with a CLIP model from a local folder in the transformers layout (``config.json``, weights,
    tokenizer and ``preprocessor_config.json``); nothing is downloaded."""

    name = "CLIP-S"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no CLIP model folder (config.json) at {path}")
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        self.image_processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Per-pair CLIP-S of ``images`` ((B, 3, H, W) in [0, 1]) and ``texts`` (B strings)."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} texts")
        out = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].float().clamp(0, 1)
            pixels = self.image_processor(images=list(batch), return_tensors="pt", do_rescale=False)["pixel_values"]
            tokens = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                    max_length=self.model.config.text_config.max_position_embeddings,
                                    return_tensors="pt")
            image_embeds = self.model.get_image_features(pixel_values=pixels.to(self.device))
            text_embeds = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
            image_embeds = getattr(image_embeds, "pooler_output", image_embeds)
            text_embeds = getattr(text_embeds, "pooler_output", text_embeds)
            cosine = F.cosine_similarity(image_embeds, text_embeds, dim=-1)
            out.append((100.0 * cosine.clamp_min(0)).cpu().numpy())
        return np.concatenate(out)
