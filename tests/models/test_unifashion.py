"""The top-level model: configuration and presets, output shapes of every task, the save/load
round trip, each phase's loss terms (the freezing itself: test_freezing.py) and missing parts."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from conftest import CAPTIONS, EMBED_DIM, GEN_SIZE, HIDDEN, MODIFICATIONS, NUM_QUERIES, build_small_model, random_images
from unifashion.models import ConfigError, Phase1Output, Phase2Output, UniFashion, UniFashionConfig, list_presets

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------- configuration
def test_presets_exist_and_parse():
    assert {"tiny", "paper"} <= set(list_presets())
    tiny = UniFashionConfig.from_preset("tiny")
    assert tiny.vision.type == "efficientnet_lite" and tiny.qformer.init_from == "bert"
    assert tiny.qformer.num_query_tokens == 32 and tiny.embed_dim == 256 and tiny.temperature_init == 0.07
    paths = {"vision.path": "/models/blip2", "qformer.init_path": "/models/blip2"}
    paper = UniFashionConfig.from_preset("paper", paths)
    assert paper.vision.type == "hf" and paper.vision.path == "/models/blip2"
    assert paper.caption_lm.lora_r == 128 and paper.caption_lm.lora_alpha == 256
    with pytest.raises(ConfigError, match="unknown preset"):
        UniFashionConfig.from_preset("huge")


def test_config_json_round_trip(tmp_path):
    config = UniFashionConfig.from_preset("tiny", {"qformer.num_hidden_layers": 3, "diffusion.cond_dropout": 0.2})
    again = UniFashionConfig.from_dict(json.loads(config.to_json_string()))
    assert again == config
    config.save(tmp_path / "config.json")
    assert UniFashionConfig.load(tmp_path / "config.json") == config


@pytest.mark.parametrize(
    "data, key",
    [
        ({"embed_dimm": 3}, "embed_dimm"),
        ({"qformer": {"hidden_sise": 3}}, "qformer.hidden_sise"),
        ({"vision": {"colour_stats": True}}, "vision.colour_stats"),
        ({"caption_lm": {"hidden": 3}}, "caption_lm.hidden"),
        ({"diffusion": {"unet_size": 3}}, "diffusion.unet_size"),
    ],
)
def test_unknown_config_keys_are_named(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        UniFashionConfig.from_dict(data)


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="q2i_condition"):
        UniFashionConfig.from_dict({"q2i_condition": "sketch"})
    with pytest.raises(ConfigError, match="init_path"):
        UniFashionConfig.from_dict({"qformer": {"init_from": "blip2"}})
    with pytest.raises(ConfigError, match="unknown config key 'qformer.widht'"):
        UniFashionConfig.from_preset("tiny", {"qformer.widht": 3})


def test_paper_preset_architecture_counts_on_the_meta_device():
    config = UniFashionConfig.from_preset(
        "paper",
        {"caption_lm": None, "diffusion": None, "vision.path": None, "qformer.init_from": "random",
         "qformer.init_path": None},
    )
    with torch.device("meta"):
        model = UniFashion(config, load_pretrained_parts=False)
    counts = model.parameter_counts()
    assert 0.98e9 < counts["vision"] < 0.99e9  # EVA ViT-g as Blip2VisionModel (39 x 1408)
    assert 185e6 < counts["qformer"] < 189e6  # BLIP-2: "Q-Former contains 188M parameters"
    assert model.encode_image  # builds without touching any file


# ---------------------------------------------------------------------------- shapes of every task
def test_encoders_and_scores(small_model, images):
    z = small_model.encode_image(images)
    t = small_model.encode_text(CAPTIONS)
    e = small_model.encode_composed(images, MODIFICATIONS)
    assert z.shape == (3, NUM_QUERIES, EMBED_DIM) and t.shape == (3, EMBED_DIM) and e.shape == (3, EMBED_DIM)
    for embeds in (z, t, e):
        assert torch.allclose(embeds.norm(dim=-1), torch.ones(embeds.shape[:-1]), atol=1e-5)
    scores = small_model.score(t, z)
    assert scores.shape == (3, 3)
    assert scores[1, 2].item() == pytest.approx(max(float(z[2, q] @ t[1]) for q in range(NUM_QUERIES)), abs=1e-6)
    captions = small_model.encode_text(["red dress", "navy shirt", "black top"])
    fused = small_model.score(e, z, captions)
    assert torch.allclose(fused, small_model.score(e, z) + e @ captions.t(), atol=1e-6)


def test_feature_outputs_are_typed(small_model, images):
    image = small_model.get_image_features(images)
    assert image.query_output.shape == (3, NUM_QUERIES, HIDDEN)
    assert image.vision_features.shape == (3, 17, 24) and image.vision_attention_mask.shape == (3, 17)
    text = small_model.get_text_features(CAPTIONS)
    assert text.text_output.shape[0] == 3 and text.text_output.shape[-1] == HIDDEN
    composed = small_model.get_composed_features(images, MODIFICATIONS)
    assert composed.query_output.shape == (3, NUM_QUERIES, HIDDEN)
    match = small_model.itm_score(images, CAPTIONS)
    assert match.logits.shape == (3, 2) and match.probability.shape == (3,)
    assert bool(((match.probability >= 0) & (match.probability <= 1)).all())


def test_pil_and_tensor_images_give_the_same_embeddings(small_model):
    array = (random_images(1)[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    from_pil = small_model.encode_image([Image.fromarray(array)])
    from_tensor = small_model.encode_image(torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255)
    assert torch.allclose(from_pil, from_tensor, atol=1e-5)


def test_captions_in_each_style(small_model, images):
    for style in ("short", "professional", "detailed"):
        captions = small_model.caption(images, style=style, max_new_tokens=4)
        assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    captions, zc = small_model.encode_captions(images[:1])
    assert captions == small_model.fusion_captions(images[:1])
    # The queries of get_image_features caption the same (the indexer passes them on).
    query_output = small_model.get_image_features(images[:1]).query_output
    assert small_model.fusion_captions(query_output=query_output) == captions
    assert torch.allclose(zc, small_model.encode_text(captions))
    assert zc.shape == (1, EMBED_DIM)


def test_generation_from_text_image_and_mask_sketch(small_model, images):
    kwargs = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    from_text = small_model.generate(CAPTIONS, **kwargs)
    composed = small_model.generate(MODIFICATIONS, images=images, **kwargs)
    assert from_text.shape == composed.shape == (3, 3, GEN_SIZE, GEN_SIZE)
    mask = torch.zeros(3, 1, 48, 48)
    mask[:, :, 12:36, 12:36] = 1
    person = random_images(3, seed=4, height=48, width=48)
    try_on = small_model.generate(CAPTIONS, mask=mask, sketch=torch.rand(3, 1, 48, 48), masked_image=person, **kwargs)
    assert try_on.shape == (3, 3, GEN_SIZE, GEN_SIZE)
    assert float(try_on.min()) >= 0.0 and float(try_on.max()) <= 1.0
    # Outside the mask the person's pixels are kept.
    kept = small_model.processor.preprocess_generation_images(person, GEN_SIZE)
    outside = small_model.processor.preprocess_masks(mask, GEN_SIZE).expand_as(kept) < 0.5
    assert torch.allclose(try_on[outside], kept[outside], atol=1e-6)
    assert small_model.processor.postprocess_images(from_text)[0].size == (GEN_SIZE, GEN_SIZE)


def test_phase_outputs_have_every_term(small_model, images):
    batch1 = {"images": images, "captions": CAPTIONS}
    phase1 = small_model.phase1_loss(batch1, generator=torch.Generator().manual_seed(0))
    assert isinstance(phase1, Phase1Output)
    for term in (phase1.loss_itc, phase1.loss_itm, phase1.loss_itg, phase1.loss_q2i):
        assert term.dim() == 0 and torch.isfinite(term)
    assert phase1.logits_per_image.shape == (3, 3)
    batch = {"reference_images": images, "texts": MODIFICATIONS, "target_images": images.flip(0),
             "target_captions": CAPTIONS, "target_generated_captions": ["red dress", "navy shirt", "a top"]}
    phase2 = small_model.phase2_loss(batch, generator=torch.Generator().manual_seed(0))
    assert isinstance(phase2, Phase2Output)
    for term in (phase2.loss_cir, phase2.loss_cir_itc_target, phase2.loss_cir_itc_caption, phase2.loss_cir_itm,
                 phase2.loss_itg, phase2.loss_q2i):
        assert term.dim() == 0 and torch.isfinite(term)


# ---------------------------------------------------------------------------- persistence
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, small_model, images):
    small_model.save_pretrained(tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer"} <= {p.name for p in (tmp_path / "model").iterdir()}
    loaded = UniFashion.from_pretrained(tmp_path / "model").eval()
    theirs, ours = loaded.state_dict(), small_model.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert torch.equal(loaded.encode_image(images), small_model.encode_image(images))
    assert torch.equal(loaded.encode_text(CAPTIONS), small_model.encode_text(CAPTIONS))
    assert torch.equal(
        loaded.encode_composed(images, MODIFICATIONS), small_model.encode_composed(images, MODIFICATIONS)
    )
    assert loaded.caption(images, max_new_tokens=4) == small_model.caption(images, max_new_tokens=4)
    generated = [m.generate(CAPTIONS[:1], num_inference_steps=2, generator=torch.Generator().manual_seed(1))
                 for m in (loaded, small_model)]
    assert torch.equal(*generated)
    loss = [m.phase1_loss({"images": images, "captions": CAPTIONS}, generator=torch.Generator().manual_seed(2)).loss
            for m in (loaded, small_model)]
    assert torch.equal(*loss)


def test_a_saved_model_loads_without_its_generators(tmp_path, small_model, images):
    small_model.save_pretrained(tmp_path / "model")
    retrieval = UniFashion.from_pretrained(tmp_path / "model", {"caption_lm": None, "diffusion": None}).eval()
    assert retrieval.caption_lm is None and retrieval.diffusion is None
    assert torch.equal(retrieval.encode_image(images), small_model.encode_image(images))
    with pytest.raises(RuntimeError, match="caption_lm"):
        retrieval.caption(images)
    # Weights that do not fit the model are still an error when nothing was dropped on purpose.
    with pytest.raises(RuntimeError, match="size mismatch for qformer.query_tokens"):
        UniFashion.from_pretrained(tmp_path / "model", {"qformer.num_query_tokens": 16})


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        UniFashion.from_pretrained(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="unknown preset 'tinyy'"):
        UniFashion.from_config("tinyy")


# ---------------------------------------------------------------------------- phases and freezing
def phase_batch(phase: int) -> dict:
    if phase == 1:
        return {"images": random_images(3, seed=1), "captions": CAPTIONS}
    return {"reference_images": random_images(3, seed=1), "texts": MODIFICATIONS,
            "target_images": random_images(3, seed=2), "target_captions": CAPTIONS}


def test_phase_terms_follow_the_stage():
    model = build_small_model(seed=4)
    batch = phase_batch(1)
    model.set_phase(1, "qformer")
    out = model.phase1_loss(batch, generator=torch.Generator().manual_seed(0))
    assert out.loss_itc is not None and out.loss_itm is not None and out.loss_itg is None and out.loss_q2i is None
    # Item ids may be strings (the data records' ids); equal ids are never each other's negatives.
    out = model.phase1_loss({**batch, "ids": ["sku-1", "sku-1", "sku-2"]}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss_itm)
    model.set_phase(1, "generators")
    assert not model.qformer.training  # frozen components run in eval mode
    out = model.phase1_loss(batch, generator=torch.Generator().manual_seed(0))
    assert out.loss_itc is None and out.loss_itg is not None and out.loss_q2i is not None
    model.set_phase(1, "autoencoder")
    out = model.phase1_loss(batch, generator=torch.Generator().manual_seed(0))
    assert out.loss_vae is not None and out.loss_itc is None
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("diffusion.vae.")
    }
    model.set_phase(None)
    assert not any(p.requires_grad for p in model.vision.parameters())
    with pytest.raises(ValueError):
        model.set_phase(1, "everything")
    with pytest.raises(ValueError):
        model.set_phase(3)


def test_model_without_generators():
    model = build_small_model(seed=5, caption_lm=None, diffusion=None).eval()
    images = random_images(2)
    out = model.phase1_loss({"images": images, "captions": CAPTIONS[:2]}, generator=torch.Generator().manual_seed(0))
    assert out.loss_itg is None and out.loss_q2i is None and out.loss_itc is not None
    with pytest.raises(RuntimeError, match="no caption_lm"):
        model.caption(images)
    with pytest.raises(RuntimeError, match="no diffusion"):
        model.generate(CAPTIONS[:2])
    model.set_phase(1, "generators")  # nothing to train, but the schedule itself is valid
    assert not any(p.requires_grad for p in model.parameters())


def test_tiny_preset_builds_offline_with_real_pretrained_parts():
    from transformers import AutoModel

    from unifashion.models.qformer import bundled_minilm_path

    model = UniFashion.from_pretrained("tiny").eval()
    assert UniFashion.from_config("tiny", load_pretrained_parts=False).config == model.config
    images = random_images(2, height=160, width=120)
    assert model.encode_image(images).shape == (2, 32, 256)
    assert model.encode_text(["a navy shirt"]).shape == (1, 256)
    bert = AutoModel.from_pretrained(str(bundled_minilm_path()), local_files_only=True)
    assert torch.equal(model.qformer.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    counts = model.parameter_counts()
    assert counts["vision"] == 3_371_008 and counts["qformer"] > 30e6
    assert len(model.caption(images, max_new_tokens=3)) == 2
    assert model.generate(["a red dress"], num_inference_steps=2).shape == (1, 3, 64, 64)


def test_tiny_preset_is_small_by_design_and_its_frozen_word_table_comes_from_the_wheel(tmp_path):
    from safetensors.torch import load_file

    from unifashion.models.artifact import weights_header, weights_record

    model = UniFashion.from_pretrained("tiny").eval()
    words = model.qformer.embeddings.word_embeddings.weight
    # The caption LM knows a vocabulary sized for captions, its head tied to its input table.
    lm = model.caption_lm.lm
    assert lm.config.vocab_size == 2048 == len(model.config.caption_lm.vocabulary)
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    # The Q-Former's MiniLM word table never trains, in any phase.
    for phase, stage in ((1, "qformer"), (2, None), (None, None)):
        model.set_phase(phase, stage)
        assert not words.requires_grad
        assert model.qformer.embeddings.position_embeddings.weight.requires_grad
    model.eval()
    model.save_pretrained(tmp_path, dtype="float16", leave_out_wheel_parts=True)
    stored = load_file(tmp_path / "model.safetensors")
    assert "qformer.embeddings.word_embeddings.weight" not in stored
    assert not any(key.startswith("vision.") for key in stored)
    parts = {part["part"] for part in weights_record(weights_header(tmp_path / "model.safetensors"))["left_out"]}
    assert parts == {"vision", "qformer_word_embeddings"}
    loaded = UniFashion.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.qformer.embeddings.word_embeddings.weight, words)
    assert loaded.config.caption_lm.vocabulary == model.config.caption_lm.vocabulary
    text = ["a navy shirt with long sleeves"]
    assert torch.allclose(loaded.encode_text(text), model.encode_text(text), atol=2e-3)
