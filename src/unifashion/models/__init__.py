"""The UniFashion model: configuration, components, losses, weights and the top-level model.

Typical use::

    from unifashion.models import UniFashion

    model = UniFashion.from_pretrained("tiny")          # the CPU preset, offline
    z = model.encode_image(images)                     # (B, 32, 256)
    t = model.encode_text(["a red floral dress"])      # (B, 256)
    scores = model.score(t, z)                         # text-to-image retrieval
"""

from unifashion.models.artifact import ModelArtifactError
from unifashion.models.config import (
    ConfigError,
    QFormerConfig,
    UniFashionConfig,
    VisionConfig,
    list_presets,
)
from unifashion.models.processor import UniFashionProcessor
from unifashion.models.qformer import QFormer, QFormerOutput
from unifashion.models.unifashion import (
    ComposedFeaturesOutput,
    ImageFeaturesOutput,
    ImageTextMatchingOutput,
    Phase1Output,
    Phase2Output,
    TextFeaturesOutput,
    UniFashion,
)
from unifashion.models.vision import (
    EfficientNetLiteEncoder,
    HFVisionEncoder,
    VisionEncoder,
    VisionEncoderOutput,
    build_vision_encoder,
)
from unifashion.models.weights import WeightLoadingReport, load_blip2_weights

__all__ = [
    "ComposedFeaturesOutput",
    "ConfigError",
    "EfficientNetLiteEncoder",
    "HFVisionEncoder",
    "ImageFeaturesOutput",
    "ImageTextMatchingOutput",
    "ModelArtifactError",
    "Phase1Output",
    "Phase2Output",
    "QFormer",
    "QFormerConfig",
    "QFormerOutput",
    "TextFeaturesOutput",
    "UniFashion",
    "UniFashionConfig",
    "UniFashionProcessor",
    "VisionConfig",
    "VisionEncoder",
    "VisionEncoderOutput",
    "WeightLoadingReport",
    "build_vision_encoder",
    "list_presets",
    "load_blip2_weights",
]
