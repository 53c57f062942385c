"""BLIP-2 checkpoints in the transformers and LAVIS layouts load through the key mapping, offline,
with a report of missing / unexpected / ignored keys; loaded models compute what the source does."""

from __future__ import annotations

import pickle
import re

import pytest
import torch

from conftest import CAPTIONS, build_small_model, random_images, small_config_dict
from unifashion.models import UniFashion, UniFashionConfig
from unifashion.models.weights import (
    LAVIS,
    TRANSFORMERS,
    TRANSFORMERS_QFORMER,
    detect_layout,
    load_blip2_weights,
    read_state_dict,
)

pytestmark = pytest.mark.usefixtures("single_thread")

VISION = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)
QFORMER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               encoder_hidden_size=24, use_qformer_text_input=True, cross_attention_frequency=2)
HEADS = ("vision_projection.", "text_projection.", "itm_head.")


def blip2_config(**extra):
    from transformers import Blip2Config

    return Blip2Config(vision_config=VISION, qformer_config=QFORMER, num_query_tokens=4, image_text_hidden_size=16,
                       **extra)


def model_for_checkpoint(directory) -> UniFashion:
    """A UniFashion model shaped like the tiny BLIP-2, vision tower and Q-Former from ``directory``."""
    config = {
        "vision": {"type": "hf", "path": str(directory), "image_size": 32},
        "qformer": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_query_tokens": 4, "cross_attention_freq": 2, "init_from": "blip2",
                    "init_path": str(directory)},
        "caption_lm": None,
        "diffusion": None,
        "embed_dim": 16,
    }
    torch.manual_seed(123)  # different from the checkpoint's: only loading can make them agree
    return UniFashion.from_config(UniFashionConfig.from_dict(config)).eval()


@pytest.fixture(scope="module")
def retrieval_checkpoint(tmp_path_factory):
    from transformers import Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    blip2 = Blip2ForImageTextRetrieval(blip2_config()).eval()
    directory = tmp_path_factory.mktemp("blip2-itm")
    blip2.save_pretrained(directory)  # safetensors, the transformers layout
    return blip2, directory


def test_transformers_retrieval_checkpoint_loads_with_nothing_missing(retrieval_checkpoint):
    blip2, directory = retrieval_checkpoint
    model = model_for_checkpoint(directory)
    report = model.weight_report
    assert report.layout == TRANSFORMERS
    assert report.ok and report.missing_keys == [] and report.unexpected_keys == []
    ours = model.state_dict()
    for key, value in blip2.state_dict().items():
        if key.startswith("qformer.") or key.startswith(HEADS):
            assert torch.equal(ours[key], value), key
    assert torch.equal(ours["qformer.query_tokens"], blip2.query_tokens)
    assert torch.equal(ours["qformer.embeddings.word_embeddings.weight"], blip2.embeddings.word_embeddings.weight)
    assert torch.equal(ours["qformer.vision_layernorm.weight"], blip2.vision_model.post_layernorm.weight)


def test_transformers_checkpoint_computes_the_same_scores(retrieval_checkpoint):
    blip2, directory = retrieval_checkpoint
    model = model_for_checkpoint(directory)
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = model.processor.tokenize(CAPTIONS[:2])
    with torch.no_grad():
        theirs_itc = blip2(pixel_values, tokens["input_ids"], tokens["attention_mask"]).logits_per_image
        theirs_itm = blip2(pixel_values, tokens["input_ids"], tokens["attention_mask"],
                           use_image_text_matching_head=True).logits_per_image
        image_embeds = model.encode_image(pixel_values=pixel_values)
        text_embeds = model.encode_text(CAPTIONS[:2])
        ours_itm = model.itm_score(None, CAPTIONS[:2], pixel_values=pixel_values).logits
    # transformers: logits_per_image[i, j] = max_q <Z_i,q, t_j>; ours: score(text, image) is (text, image).
    assert torch.allclose(model.score(text_embeds, image_embeds).t(), theirs_itc, atol=1e-4)
    assert torch.allclose(ours_itm, theirs_itm, atol=1e-4)


def test_blip2_model_layout_reports_what_it_lacks(tmp_path):
    """``Blip2Model`` has the Q-Former but no text embeddings, ITC projections or ITM head."""
    from transformers import Blip2Model

    torch.manual_seed(0)
    text_config = dict(model_type="opt", hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       vocab_size=100, max_position_embeddings=32, word_embed_proj_dim=16)
    Blip2Model(blip2_config(text_config=text_config)).save_pretrained(tmp_path)
    model = model_for_checkpoint(tmp_path)
    report = model.weight_report
    assert report.layout == TRANSFORMERS and report.unexpected_keys == [] and report.mismatched_keys == []
    # Every mapped part loaded: all Q-Former layers, the input LayerNorm, queries, vision LayerNorm.
    loaded = set(report.loaded_keys)
    assert {k for k in model.state_dict() if k.startswith(("qformer.encoder.", "qformer.layernorm."))} <= loaded
    assert {"qformer.query_tokens", "qformer.vision_layernorm.weight"} <= loaded
    # Missing: exactly the parts this layout does not have.
    assert set(report.missing_keys) == {
        k for k in model.state_dict() if k.startswith(("qformer.embeddings.", *HEADS))
    }
    assert any(k.startswith("language_model.") for k in report.ignored_keys)


def test_bare_qformer_state_dict_loads(tmp_path):
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    torch.manual_seed(0)
    qformer = Blip2QFormerModel(Blip2QFormerConfig(**QFORMER))
    qformer.save_pretrained(tmp_path)
    assert detect_layout(read_state_dict(tmp_path)) == TRANSFORMERS_QFORMER
    model = build_small_model(qformer={**small_config_dict()["qformer"], "cross_attention_freq": 2})
    # The small model's vision width (24) matches encoder_hidden_size, so every tensor fits.
    report = load_blip2_weights(model, tmp_path)
    assert report.ok and report.missing_keys == []
    assert torch.equal(model.qformer.encoder.layer[1].output_query.dense.weight,
                       qformer.encoder.layer[1].output_query.dense.weight)


# ---------------------------------------------------------------------------- LAVIS layout
def to_lavis_name(key: str) -> str:
    """Our name -> LAVIS's, written independently of the loader's mapping (the inverse direction)."""
    fixed = {"qformer.query_tokens": "query_tokens", "temperature": "temp",
             "qformer.layernorm.weight": "Qformer.bert.embeddings.LayerNorm.weight",
             "qformer.layernorm.bias": "Qformer.bert.embeddings.LayerNorm.bias",
             "qformer.vision_layernorm.weight": "ln_vision.weight", "qformer.vision_layernorm.bias": "ln_vision.bias"}
    if key in fixed:
        return fixed[key]
    for ours, theirs in (("vision_projection.", "vision_proj."), ("text_projection.", "text_proj."),
                         ("itm_head.", "itm_head."), ("vision.model.", "visual_encoder.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    key = re.sub(r"\.(attention|crossattention)\.attention\.", r".\1.self.", key)
    return "Qformer.bert." + key[len("qformer."):]


def test_lavis_checkpoint_loads_and_reproduces_the_source(tmp_path):
    source = build_small_model(seed=1).eval()
    with torch.no_grad():
        source.temperature.fill_(0.05)
    lavis = {to_lavis_name(k): v.clone() for k, v in source.state_dict().items()
             if k.startswith(("qformer.", "vision.", *HEADS)) or k == "temperature"}
    assert "Qformer.bert.encoder.layer.0.attention.self.query.weight" in lavis
    assert "Qformer.bert.encoder.layer.1.crossattention.self.value.bias" in lavis
    lavis["Qformer.cls.predictions.bias"] = torch.zeros(10)  # LAVIS's Q-Former LM head: not used
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(10)[None]
    lavis["opt_proj.weight"] = torch.zeros(2, 2)
    lavis["some.unknown.key"] = torch.zeros(1)
    path = tmp_path / "blip2_pretrained.pth"
    torch.save({"model": lavis}, path)  # LAVIS checkpoints wrap the state dict in {"model": ...}

    target = build_small_model(seed=2).eval()
    target.vision.load_state_dict(source.vision.state_dict())  # the vision tower loads separately
    report = load_blip2_weights(target, path)
    assert report.layout == LAVIS
    assert report.missing_keys == [] and report.mismatched_keys == []
    assert report.unexpected_keys == ["some.unknown.key"]
    assert {"Qformer.cls.predictions.bias", "opt_proj.weight", "Qformer.bert.embeddings.position_ids"} <= set(
        report.ignored_keys
    )
    assert target.temperature.item() == pytest.approx(0.05)
    images = random_images(2)
    assert torch.allclose(target.encode_image(images), source.encode_image(images), atol=1e-6)
    assert torch.allclose(target.encode_text(CAPTIONS), source.encode_text(CAPTIONS), atol=1e-6)


def test_shape_mismatches_are_reported_not_loaded():
    model = build_small_model()
    before = model.itm_head.weight.clone()
    report = load_blip2_weights(
        model, {"itm_head.weight": torch.zeros(3, 7), "query_tokens": torch.zeros(1)}, layout=TRANSFORMERS
    )
    assert report.layout == TRANSFORMERS
    assert {k for k, _, _ in report.mismatched_keys} == {"itm_head.weight", "qformer.query_tokens"}
    assert torch.equal(model.itm_head.weight, before) and not report.ok


class NotATensor:
    """Anything but tensors and containers must not be unpickled."""


def test_checkpoints_are_read_without_unpickling_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"query_tokens": torch.zeros(1)}, "payload": NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(path)
    with pytest.raises(ValueError, match="not a BLIP-2"):
        detect_layout(["foo.weight"])
