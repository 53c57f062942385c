"""The CLIP-style dual-encoder baseline: shapes, stages, loss, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unifashion.models.dual_encoder import DualEncoder, DualEncoderConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DualEncoder(DualEncoderConfig.from_dict({"vision": {"image_size": 64}})).eval()


def test_embeddings_are_normalised(model):
    images = torch.rand(3, 3, 64, 64)
    e = model.encode_image(pixel_values=images)
    t = model.encode_text(["a red dress", "a blue shirt", "black pants"])
    assert e.shape == t.shape == (3, 256)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    for mode in ("sum", "learned"):
        q = model.compose(e, t, combiner=mode)
        assert q.shape == (3, 256) and torch.allclose(q.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="combiner"):
        model.compose(e, t, combiner="max")


def test_itc_loss_matches_direct_computation(model):
    torch.manual_seed(1)
    e = F.normalize(torch.randn(4, 256), dim=-1)
    t = F.normalize(torch.randn(4, 256), dim=-1)
    logits = e @ t.t() / model.temperature
    expected = 0
    for i in range(4):
        expected += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    assert torch.allclose(model.itc_loss(e, t), expected / 8, atol=1e-5)


def test_stages_freeze_what_they_say(model):
    model.set_stage("combiner")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"combiner"}
    model.set_stage("encoders")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert "vision" not in trainable and "combiner" not in trainable
    assert {"text", "text_proj", "image_proj"} <= trainable


def test_save_and_load_give_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path)
    again = DualEncoder.from_pretrained(tmp_path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixel_values=images), again.encode_image(pixel_values=images))
        assert torch.equal(model.encode_text(["plaid skirt"]), again.encode_text(["plaid skirt"]))
    with pytest.raises(FileNotFoundError, match="dual_encoder_config.json"):
        DualEncoder.from_pretrained(tmp_path / "missing")


def test_frozen_parts_are_left_out_of_the_file_and_restored_from_their_wheels(model, tmp_path):
    from safetensors.torch import load_file

    model.set_stage("encoders")
    assert not model.text.embeddings.word_embeddings.weight.requires_grad
    assert model.text.embeddings.position_embeddings.weight.requires_grad
    model.eval()
    model.save_pretrained(tmp_path, dtype="float16")
    stored = load_file(tmp_path / "model.safetensors")
    assert "text.embeddings.word_embeddings.weight" not in stored
    assert not any(key.startswith("vision.") for key in stored)
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    again = DualEncoder.from_pretrained(tmp_path)
    assert torch.equal(again.text.embeddings.word_embeddings.weight, model.text.embeddings.word_embeddings.weight)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(["plaid skirt"]), again.encode_text(["plaid skirt"]), atol=2e-3)


def test_the_attention_pool_works_in_the_embedding_width_and_old_folders_still_load(tmp_path):
    import json

    from safetensors.torch import save_file

    torch.manual_seed(0)
    new = DualEncoder(DualEncoderConfig.from_dict({"vision": {"image_size": 64}}))
    assert new.image_pool.embed_dim == 256 and new.image_pool.kdim == new.vision.output_dim
    # A folder written before the pool was narrowed (and before the word table was frozen).
    old = DualEncoder(DualEncoderConfig.from_dict({"vision": {"image_size": 64}, "pool_width": "vision",
                                                   "freeze_word_embeddings": False})).eval()
    assert old.image_pool.embed_dim == old.vision.output_dim
    state = {k: v.contiguous() for k, v in old.state_dict().items() if not k.startswith("vision.")}
    save_file(state, tmp_path / "model.safetensors")
    data = old.config.to_dict()
    del data["pool_width"], data["freeze_word_embeddings"]
    (tmp_path / "dual_encoder_config.json").write_text(json.dumps(data))
    again = DualEncoder.from_pretrained(tmp_path)
    assert again.config.pool_width == "vision"
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(old.encode_image(pixel_values=images), again.encode_image(pixel_values=images))
    with pytest.raises(ValueError, match="pool_width"):
        DualEncoderConfig.from_dict({"pool_width": "wide"})
