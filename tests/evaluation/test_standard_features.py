"""Standard generation metrics from local files: the Inception TorchScript's pool features and
CLIP-S from a CLIP folder (a tiny random CLIP saved in the transformers layout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unifashion.evaluation.features import CLIPScorer, TorchScriptFeatures


class _FakeInception(torch.nn.Module):
    """The interface of inception-2015-12-05.pt: logits by default, pool features on request."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Linear(3, 6)
        self.logits = torch.nn.Linear(6, 4)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(img / 255.0, size=(8, 8), mode="bilinear", align_corners=False)
        feats = self.features(x.mean(dim=(2, 3)))
        if return_features:
            return feats
        return self.logits(feats)


def test_inception_torchscript_gives_pool_features_not_logits(tmp_path):
    torch.manual_seed(0)
    module = _FakeInception()
    torch.jit.script(module).save(str(tmp_path / "inception-2015-12-05.pt"))
    extractor = TorchScriptFeatures(tmp_path)  # a folder holding the standard file name
    images = torch.rand(5, 3, 20, 12)
    feats = extractor(images, batch_size=2)
    with torch.no_grad():
        expected = module(images * 255.0, return_features=True).numpy()
    assert feats.shape == (5, 6)
    assert np.allclose(feats, expected, atol=1e-5)


def test_missing_inception_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        TorchScriptFeatures(tmp_path)


def _tiny_clip_folder(root):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (root / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt")).save_pretrained(root)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokens), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0,
                     "eos_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root)
    return root


def test_clip_score_from_a_local_folder_matches_a_direct_computation(tmp_path):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = _tiny_clip_folder(tmp_path)
    scorer = CLIPScorer(folder)
    images = torch.rand(3, 3, 40, 30)
    texts = ["red dress", "blue shirt", "a skirt"]
    scores = scorer(images, texts, batch_size=2)
    # Reference: the CLIP model loaded again, features by hand, 100 * max(cos, 0).
    model = CLIPModel.from_pretrained(folder).eval()
    processor, tokenizer = CLIPImageProcessor.from_pretrained(folder), CLIPTokenizer.from_pretrained(folder)
    with torch.no_grad():
        pixels = processor(images=list(images), return_tensors="pt", do_rescale=False)["pixel_values"]
        assert pixels.shape == (3, 3, 32, 32)
        v = model.vision_model(pixel_values=pixels).pooler_output
        v = model.visual_projection(v)
        tok = tokenizer(texts, padding=True, return_tensors="pt")
        t = model.text_projection(model.text_model(**tok).pooler_output)
    cos = (torch.nn.functional.normalize(v, dim=-1) * torch.nn.functional.normalize(t, dim=-1)).sum(-1)
    assert np.allclose(scores, (100 * cos.clamp_min(0)).numpy(), atol=1e-4)
    assert scores.shape == (3,) and (scores >= 0).all()
    with pytest.raises(ValueError, match="2 images for 3 texts"):
        scorer(images[:2], texts)


def test_clip_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="CLIP model folder"):
        CLIPScorer(tmp_path)
