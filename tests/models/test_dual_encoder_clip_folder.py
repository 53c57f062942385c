"""``DualEncoder.from_clip_folder``: the paper preset's vision tower from a saved CLIP ViT."""

from __future__ import annotations

import pytest
import torch

from unifashion.models.config import CLIP_MEAN, CLIP_STD
from unifashion.models.dual_encoder import DualEncoder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip-vit")
    CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=48, patch_size=8)).save_pretrained(path, safe_serialization=True)
    return path


def test_the_vision_tower_is_the_saved_clip_at_its_own_size(clip_dir, single_thread):
    model = DualEncoder.from_clip_folder(clip_dir, embed_dim=16, combiner_hidden=16)
    vision = model.config.vision
    assert (vision.type, vision.path, vision.image_size) == ("hf", str(clip_dir), 48)
    assert tuple(vision.image_mean) == tuple(CLIP_MEAN) and tuple(vision.image_std) == tuple(CLIP_STD)
    assert type(model.vision.model).__name__ == "CLIPVisionModel" and model.config.embed_dim == 16
    with torch.no_grad():
        embeds = model.eval().encode_image(pixel_values=torch.rand(2, 3, 48, 48))
    assert embeds.shape == (2, 16)


def test_a_folder_without_a_clip_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        DualEncoder.from_clip_folder(tmp_path)
