"""Vision encoders (EfficientNet-Lite0 with its ImageNet weights; a transformers ViT from a local
directory) and the image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unifashion.models.config import ConfigError, VisionConfig
from unifashion.models.processor import UniFashionProcessor, bundled_tokenizer_path
from unifashion.models.vision import (
    EfficientNetLiteEncoder,
    HFVisionEncoder,
    build_vision_encoder,
    efficientnet_lite0_weights_path,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def efficientnet() -> EfficientNetLiteEncoder:
    return build_vision_encoder(VisionConfig(image_size=128))


def test_efficientnet_loads_the_bundled_imagenet_weights(efficientnet):
    reference = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    ours = efficientnet.backbone.state_dict()
    for key in ("_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_conv_head.weight", "_bn1.running_var"):
        assert torch.equal(ours[key], reference[key])
    assert not any(k.startswith("_fc.") for k in ours)  # the classifier is dropped


def test_efficientnet_tokens_at_128_px(efficientnet):
    pixels = torch.randn(2, 3, 128, 128)
    out = efficientnet(pixels)
    # 4 x 4 grid; 1280 head + 40 (stride 8) + 112 (stride 16) mid-level + 6 colour channels.
    assert efficientnet.mid_level_channels == [40, 112]
    assert efficientnet.output_dim == 1280 + 40 + 112 + 6
    assert out.features.shape == (2, 16, 1438)
    assert out.attention_mask.shape == (2, 16) and bool(out.attention_mask.all())


def test_efficientnet_colour_statistics_are_cell_means_and_stds(efficientnet):
    pixels = torch.randn(1, 3, 128, 128)
    colour = efficientnet(pixels).features[0, :, -6:]  # (16 cells, mean RGB + std RGB)
    cells = pixels[0].unfold(1, 32, 32).unfold(2, 32, 32)  # (3, 4, 4, 32, 32)
    expected_mean = cells.mean(dim=(-1, -2)).flatten(1).t()
    expected_std = cells.std(dim=(-1, -2), unbiased=False).flatten(1).t()
    assert torch.allclose(colour[:, :3], expected_mean, atol=1e-5)
    assert torch.allclose(colour[:, 3:], expected_std, atol=1e-4)


def test_efficientnet_is_frozen_and_stays_in_eval_mode(efficientnet):
    assert not any(p.requires_grad for p in efficientnet.parameters())
    efficientnet.train()
    assert not efficientnet.training and not efficientnet.backbone._bn0.training
    running_mean = efficientnet.backbone._bn0.running_mean.clone()
    efficientnet(torch.randn(2, 3, 128, 128) * 5)
    assert torch.equal(running_mean, efficientnet.backbone._bn0.running_mean)


def test_efficientnet_without_extras_gives_head_features_only():
    encoder = build_vision_encoder(
        VisionConfig(image_size=64, pretrained=False, mid_level_features=False, colour_statistics=False)
    )
    out = encoder(torch.randn(1, 3, 64, 64))
    assert encoder.output_dim == 1280 and out.features.shape == (1, 4, 1280)


def test_efficientnet_telling_colours_apart_uses_the_colour_tokens(efficientnet):
    """Navy and black renders differ clearly in the colour channels of every cell."""
    processor = UniFashionProcessor(None, image_size=128)
    navy = Image.new("RGB", (128, 128), (20, 30, 90))
    black = Image.new("RGB", (128, 128), (15, 15, 20))
    features = efficientnet(processor.preprocess_images([navy, black])).features
    colour_gap = (features[0, :, -6:-3] - features[1, :, -6:-3]).abs().mean()
    assert colour_gap > 0.3  # in normalised units


def test_hf_vision_encoder_loads_a_local_clip_directory(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         image_size=32, patch_size=8)
    ).eval()
    clip.save_pretrained(tmp_path / "clip")
    encoder = HFVisionEncoder(VisionConfig(type="hf", path=str(tmp_path / "clip"), image_size=32))
    for key, value in clip.state_dict().items():
        assert torch.equal(encoder.model.state_dict()[key], value)
    pixels = torch.randn(2, 3, 32, 32)
    out = encoder(pixels)
    with torch.no_grad():
        expected = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    assert out.features.shape == (2, 17, 24) and torch.allclose(out.features, expected)
    assert encoder.output_dim == 24 and not any(p.requires_grad for p in encoder.parameters())


def test_hf_vision_encoder_takes_the_tower_of_a_composite_checkpoint(tmp_path):
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    config = Blip2Config(
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            encoder_hidden_size=24, use_qformer_text_input=True),
        num_query_tokens=4,
    )
    blip2 = Blip2ForImageTextRetrieval(config).eval()
    blip2.save_pretrained(tmp_path / "blip2")
    encoder = HFVisionEncoder(VisionConfig(type="hf", path=str(tmp_path / "blip2"), image_size=32))
    assert type(encoder.model).__name__ == "Blip2VisionModel"
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = blip2.vision_model(pixel_values=pixels, output_hidden_states=True)
    features = encoder(pixels).features
    # Features are taken before post_layernorm (LAVIS's ln_vision, which the Q-Former owns).
    assert torch.allclose(features, reference.hidden_states[-1], atol=1e-6)
    assert torch.allclose(blip2.vision_model.post_layernorm(features), reference.last_hidden_state, atol=1e-5)


def test_vision_config_errors():
    with pytest.raises(ConfigError):
        VisionConfig(type="resnet")
    with pytest.raises(ConfigError):
        VisionConfig(type="hf")  # neither a path nor an hf_config
    with pytest.raises(ConfigError, match="vision.bogus"):
        VisionConfig.from_dict({"bogus": 1})


# ---------------------------------------------------------------------------- processor
@pytest.fixture(scope="module")
def processor() -> UniFashionProcessor:
    from transformers import AutoTokenizer

    return UniFashionProcessor(AutoTokenizer.from_pretrained(bundled_tokenizer_path()), image_size=32)


def test_processor_accepts_pil_numpy_and_tensors_alike(processor):
    array = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    from_pil = processor.preprocess_images(Image.fromarray(array))
    from_numpy = processor.preprocess_images([array])
    from_tensor = processor.preprocess_images(torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    from_batch = processor.preprocess_images(torch.from_numpy(array).permute(2, 0, 1)[None])  # uint8 batch
    from_array_batch = processor.preprocess_images(array[None])  # (B, H, W, 3) uint8
    assert from_pil.shape == (1, 3, 32, 32)
    for other in (from_numpy, from_tensor, from_batch, from_array_batch):
        assert torch.allclose(from_pil, other, atol=1e-5)
    # Normalisation: a mid-grey image maps to (0.5 - mean) / std.
    grey = processor.preprocess_images(Image.new("RGB", (10, 10), (128, 128, 128)))
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(grey[0, :, 0, 0], expected, atol=1e-5)


def test_processor_pad_mode_keeps_the_aspect_ratio(processor):
    pad = UniFashionProcessor(processor.tokenizer, image_size=32, resize_mode="pad")
    tall = torch.zeros(3, 64, 32)  # black, twice as tall as wide
    out = pad.to_tensor(tall, 32)[0]
    assert torch.all(out[:, :, :8] == 1.0) and torch.all(out[:, :, 24:] == 1.0)  # white side bars
    assert torch.all(out[:, :, 8:24] == 0.0)


def test_processor_masks_sketches_and_postprocessing(processor):
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    masks = processor.preprocess_masks(Image.fromarray(mask), size=32)
    assert masks.shape == (1, 1, 32, 32) and set(masks.unique().tolist()) == {0.0, 1.0}
    assert masks[0, 0, 16, 16] == 1.0 and masks[0, 0, 0, 0] == 0.0
    sketch = processor.preprocess_sketches(torch.rand(1, 1, 64, 64), size=32)
    assert sketch.shape == (1, 1, 32, 32) and sketch.min() >= 0.0 and sketch.max() <= 1.0
    pil = processor.postprocess_images(torch.rand(2, 3, 16, 16))
    assert len(pil) == 2 and pil[0].size == (16, 16)


def test_processor_tokenises_with_truncation(processor):
    tokens = processor.tokenize(["a red dress", "word " * 200])
    assert tokens["input_ids"].shape == (2, processor.max_text_length)
    assert tokens["attention_mask"][0].sum() == 5  # [CLS] a red dress [SEP]
    assert tokens["input_ids"].dtype == torch.long
