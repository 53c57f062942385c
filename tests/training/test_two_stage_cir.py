"""The two-stage CIR recipe on the dual encoder: what each stage trains (gradients only there),
sentence-level prompts, a CLIP ViT vision tower from a local directory, and a tiny end-to-end run."""

from __future__ import annotations

import pytest
import torch

from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
from unifashion.models.config import VisionConfig
from unifashion.models.dual_encoder import DualEncoder, DualEncoderConfig
from unifashion.training.data import ImageBank
from unifashion.training.two_stage_cir import (
    CachedCombinerDataset,
    CIRTripletDataset,
    CombinerStageObjective,
    EncoderStageObjective,
    TwoStageCIRConfig,
    freeze_lower_text_layers,
    gallery_bank,
    load_two_stage_cir,
    sentence_prompt,
    train_two_stage_cir,
)

TINY_CLIP_VISION = {"model_type": "clip_vision_model", "hidden_size": 24, "intermediate_size": 48,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP ViT saved as a local checkpoint (safetensors), the paper preset's layout."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = dict(TINY_CLIP_VISION)
    config.pop("model_type")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip-vit")
    CLIPVisionModel(CLIPVisionConfig(**config)).save_pretrained(path, safe_serialization=True)
    return path


def _model(clip_dir) -> DualEncoder:
    torch.manual_seed(0)
    config = DualEncoderConfig(vision=VisionConfig(type="hf", path=str(clip_dir), image_size=32), embed_dim=32,
                               combiner_hidden=32)
    return DualEncoder(config)


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue(CatalogueConfig(n_items=40, image_size=32, seed=5))


@pytest.fixture(scope="module")
def setup(clip_dir, catalogue):
    model = _model(clip_dir)
    items = catalogue.item_records("train")
    bank = ImageBank(items, model, progress=False, with_generation_images=False)
    captions = {r.item_id: r.caption("detailed") for r in items}
    return model, bank, catalogue.triplet_records("train"), captions


def test_clip_vit_from_a_local_directory_is_the_vision_tower(clip_dir, setup):
    model, bank, _, _ = setup
    assert type(model.vision.model).__name__ == "CLIPVisionModel"
    assert bank.vision_features.shape[1:] == (17, 24)  # 4 x 4 patches + CLS, CLIP's width


def test_sentence_prompt():
    assert sentence_prompt("a red dress with a collar, knee length.", "is blue") == \
        "a red dress with a collar, knee length. is blue"
    assert sentence_prompt(None, "is blue") == "is blue"


def _grads(objective, batch) -> set[str]:
    for p in objective.parameters():
        p.grad = None
    objective.train()
    objective(batch)["loss"].backward()
    return {n for n, p in objective.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_stage_one_trains_only_the_towers_heads_and_top_text_layers(setup, single_thread):
    model, bank, triplets, captions = setup
    model.set_stage("encoders")
    freeze_lower_text_layers(model, 2)
    data = CIRTripletDataset(triplets, bank, captions)
    assert data.texts[0].startswith(captions[triplets[0].reference_id].rstrip("."))
    negatives = gallery_bank(model, bank, refresh_every=2)
    got = _grads(EncoderStageObjective(model, negatives), data.collate(list(range(6))))
    assert {n.split(".")[0] for n in got} == {"image_pool_query", "image_pool", "image_proj", "text", "text_proj",
                                              "log_inv_temperature"}
    text_layers = {int(n.split(".")[3]) for n in got if n.startswith("text.encoder.layer.")}
    assert text_layers == {4, 5}
    assert not any(n.startswith(("vision.", "combiner.", "text.embeddings.")) for n in got)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith(("vision.", "combiner.", "text.embeddings.", "text.encoder.layer.0.",
                             "text.encoder.layer.1.", "text.encoder.layer.2.", "text.encoder.layer.3."))
               for n in frozen)
    assert negatives.refreshes == 1 and len(negatives) == len(bank.ids)


def test_stage_two_trains_only_the_combiner(setup, single_thread):
    model, bank, triplets, captions = setup
    model.set_stage("combiner")
    data = CIRTripletDataset(triplets, bank, captions)
    with torch.no_grad():
        batch = data.collate(list(range(6)))
        ref = model.embed_vision_features(batch["reference_vision_features"])
        tgt = model.embed_vision_features(batch["target_vision_features"])
        txt = model.encode_text(batch["texts"])
    cached = CachedCombinerDataset(ref, txt, tgt, batch["ids"])
    got = _grads(CombinerStageObjective(model, gallery_bank(model, bank, None)), cached.collate(list(range(6))))
    assert got and {n.split(".")[0] for n in got} == {"combiner"}
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"combiner"}


def test_config_rejects_bad_stages():
    with pytest.raises(ValueError, match="stages"):
        TwoStageCIRConfig(stages=("combiner", "encoders"))
    with pytest.raises(ValueError, match="stages"):
        TwoStageCIRConfig(stages=("decoder",))
    assert TwoStageCIRConfig(stages=("encoders",)).combiner == "sum"
    assert TwoStageCIRConfig().combiner == "learned"


def test_tiny_run_trains_saves_loads_and_is_reused(tmp_path, clip_dir, setup, single_thread):
    _, bank, triplets, captions = setup
    model = _model(clip_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TwoStageCIRConfig(stage1_steps=2, stage2_steps=3, batch_size=4, refresh_every=1)
    with pytest.raises(ValueError, match="captions"):
        train_two_stage_cir(model, triplets, bank, tmp_path / "run", config, None, progress=False)
    final = train_two_stage_cir(model, triplets, bank, tmp_path / "run", config, captions, progress=False)
    after = model.state_dict()
    moved = {k for k in after if k in before and not torch.equal(before[k], after[k])}
    assert {k.split(".")[0] for k in moved} >= {"text", "image_proj"}
    assert not any(k.startswith("vision.") for k in moved)
    loaded, loaded_config = load_two_stage_cir(final)
    assert loaded_config == config and loaded.processor.max_text_length == config.max_text_length
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(pixel_values=images), model.eval().encode_image(pixel_values=images))
    # A finished run is returned as it is.
    assert train_two_stage_cir(model, triplets, bank, tmp_path / "run", config, captions, progress=False) == final
    with pytest.raises(FileNotFoundError, match="two_stage_cir.json"):
        load_two_stage_cir(tmp_path)
    with pytest.raises(KeyError, match="caption"):
        CIRTripletDataset(triplets, bank, {})
