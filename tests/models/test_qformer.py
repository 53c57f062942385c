"""Q-Former: the three attention masks (checked by perturbation), shapes, cross-attention layout,
and the all-MiniLM-L6-v2 initialisation (tensors really copied; the text path is BERT's)."""

from __future__ import annotations

import pytest
import torch

from unifashion.layers import MaskType, build_qformer_mask
from unifashion.models.config import ConfigError, QFormerConfig
from unifashion.models.qformer import QFormer, bundled_minilm_path, init_qformer_from_bert

pytestmark = pytest.mark.usefixtures("single_thread")

ENCODER_WIDTH = 12
NUM_QUERIES = 3


def small_qformer(**overrides) -> QFormer:
    values = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=32, num_query_tokens=NUM_QUERIES, cross_attention_freq=2)
    values.update(overrides)
    torch.manual_seed(0)
    return QFormer(QFormerConfig(**values), ENCODER_WIDTH).eval()


def image_features(seed: int, batch: int = 2, tokens: int = 5) -> torch.Tensor:
    return torch.randn(batch, tokens, ENCODER_WIDTH, generator=torch.Generator().manual_seed(seed))


def text_ids(seed: int, batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(1000, 2000, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- mask structure
def test_mask_matrices_for_two_queries_and_three_tokens():
    text_mask = torch.tensor([[1, 1, 0]])  # the last token is padding
    unimodal = build_qformer_mask(2, text_mask, "unimodal")[0]
    bidirectional = build_qformer_mask(2, text_mask, "bidirectional")[0]
    causal = build_qformer_mask(2, text_mask, "causal")[0]
    expected_unimodal = torch.tensor([
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
    ], dtype=torch.bool)
    expected_bidirectional = torch.tensor([[1, 1, 1, 1, 0]] * 5, dtype=torch.bool)
    expected_causal = torch.tensor([
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
    ], dtype=torch.bool)
    assert torch.equal(unimodal, expected_unimodal)
    assert torch.equal(bidirectional, expected_bidirectional)
    assert torch.equal(causal, expected_causal)
    with pytest.raises(ValueError):
        build_qformer_mask(2, text_mask, "sideways")


# ---------------------------------------------------------------------------- masks by perturbation
def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# A masked-out position contributes exactly zero, so "invisible" means bit-identical outputs;
# "visible" means any change at all (random initial weights make some influences small).
VISIBLE = 1e-6


def run(qformer, ids, image, mask_type, text_mask=None):
    with torch.no_grad():
        return qformer(ids, text_mask, image, mask_type=mask_type)


def test_shapes_and_cross_attention_layout():
    qformer = small_qformer()
    out = run(qformer, text_ids(0), image_features(0), "bidirectional")
    assert out.last_hidden_state.shape == (2, NUM_QUERIES + 6, 32)
    assert out.query_output.shape == (2, NUM_QUERIES, 32)
    assert out.text_output.shape == (2, 6, 32)
    assert [layer.has_cross_attention for layer in qformer.encoder.layer] == [True, False, True]
    assert qformer.encoder.layer[0].crossattention.attention.key.in_features == ENCODER_WIDTH
    queries_only = qformer(image_features=image_features(0))
    assert queries_only.query_output.shape == (2, NUM_QUERIES, 32) and queries_only.text_output is None
    text_only = qformer(text_ids(0), use_queries=False)
    assert text_only.query_output is None and text_only.text_output.shape == (2, 6, 32)


def test_unimodal_mask_keeps_queries_and_text_apart():
    qformer = small_qformer()
    image = image_features(0)
    base = run(qformer, text_ids(0), image, "unimodal")
    other_text = run(qformer, text_ids(1), image, "unimodal")
    other_image = run(qformer, text_ids(0), image_features(1), "unimodal")
    assert diff(base.query_output, other_text.query_output) == 0  # text invisible to queries
    assert diff(base.text_output, other_text.text_output) > VISIBLE
    assert diff(base.text_output, other_image.text_output) == 0  # image invisible to text
    assert diff(base.query_output, other_image.query_output) > VISIBLE


def test_unimodal_joint_pass_equals_separate_passes():
    qformer = small_qformer()
    ids, image = text_ids(0), image_features(0)
    joint = run(qformer, ids, image, "unimodal")
    with torch.no_grad():
        queries_alone = qformer(image_features=image).query_output
        text_alone = qformer(ids, use_queries=False).text_output
    assert torch.allclose(joint.query_output, queries_alone, atol=1e-5)
    assert torch.allclose(joint.text_output, text_alone, atol=1e-5)


def test_bidirectional_mask_lets_queries_read_the_text():
    qformer = small_qformer()
    image = image_features(0)
    base = run(qformer, text_ids(0), image, "bidirectional")
    other_text = run(qformer, text_ids(1), image, "bidirectional")
    other_image = run(qformer, text_ids(0), image_features(1), "bidirectional")
    assert diff(base.query_output, other_text.query_output) > VISIBLE
    assert diff(base.text_output, other_image.text_output) > VISIBLE  # text reads the image


def test_causal_mask_hides_later_tokens():
    qformer = small_qformer()
    image = image_features(0)
    ids = text_ids(0)
    changed = ids.clone()
    changed[:, 4] = 7  # change token 4 only
    base = run(qformer, ids, image, "causal")
    after = run(qformer, changed, image, "causal")
    # Tokens before 4 and the queries do not see token 4; tokens 4 and 5 do.
    assert diff(base.text_output[:, :4], after.text_output[:, :4]) == 0
    assert diff(base.query_output, after.query_output) == 0
    assert diff(base.text_output[:, 4:], after.text_output[:, 4:]) > VISIBLE
    # Every text token sees the queries, hence the image.
    other_image = run(qformer, ids, image_features(1), "causal")
    assert diff(base.text_output[:, 0], other_image.text_output[:, 0]) > VISIBLE


@pytest.mark.parametrize("mask_type", list(MaskType))
def test_padding_is_invisible(mask_type):
    qformer = small_qformer()
    image = image_features(0)
    ids = text_ids(0)
    text_mask = torch.ones_like(ids)
    text_mask[:, -2:] = 0
    changed = ids.clone()
    changed[:, -2:] = 5  # different ids at the padded positions
    base = run(qformer, ids, image, mask_type, text_mask)
    after = run(qformer, changed, image, mask_type, text_mask)
    assert diff(base.query_output, after.query_output) == 0
    assert diff(base.text_output[:, :-2], after.text_output[:, :-2]) == 0


def test_queries_without_an_image_read_the_text():
    qformer = small_qformer()
    base = run(qformer, text_ids(0), None, "bidirectional")
    other = run(qformer, text_ids(1), None, "bidirectional")
    assert base.query_output.shape == (2, NUM_QUERIES, 32)
    assert diff(base.query_output, other.query_output) > VISIBLE


def test_nothing_to_attend_to_is_an_error():
    qformer = small_qformer()
    with pytest.raises(ValueError):
        qformer()
    with pytest.raises(ValueError):
        qformer(image_features=image_features(0), use_queries=False)


# ---------------------------------------------------------------------------- MiniLM initialisation
@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel, AutoTokenizer

    path = str(bundled_minilm_path())
    return AutoModel.from_pretrained(path, local_files_only=True).eval(), AutoTokenizer.from_pretrained(path)


def test_minilm_weights_are_copied(minilm):
    bert, _ = minilm
    torch.manual_seed(0)
    qformer = QFormer(QFormerConfig(), ENCODER_WIDTH).eval()  # the default shape is MiniLM's
    fresh_cross = qformer.encoder.layer[0].crossattention.attention.query.weight.clone()
    left_fresh = init_qformer_from_bert(qformer)
    theirs = bert.state_dict()
    ours = qformer.state_dict()
    assert torch.equal(ours["embeddings.word_embeddings.weight"], theirs["embeddings.word_embeddings.weight"])
    assert torch.equal(
        ours["embeddings.position_embeddings.weight"],
        theirs["embeddings.position_embeddings.weight"] + theirs["embeddings.token_type_embeddings.weight"][0],
    )
    assert torch.equal(ours["layernorm.weight"], theirs["embeddings.LayerNorm.weight"])
    for layer in range(6):
        prefix = f"encoder.layer.{layer}."
        for name in ("query", "key", "value"):
            assert torch.equal(
                ours[prefix + f"attention.attention.{name}.weight"], theirs[prefix + f"attention.self.{name}.weight"]
            )
        for name in ("attention.output.dense.weight", "attention.output.LayerNorm.weight"):
            assert torch.equal(ours[prefix + name], theirs[prefix + name])
        for ffn in ("intermediate", "intermediate_query"):  # BLIP-2: the query FFN starts as BERT's FFN
            assert torch.equal(ours[prefix + f"{ffn}.dense.weight"], theirs[prefix + "intermediate.dense.weight"])
        for ffn in ("output", "output_query"):
            assert torch.equal(ours[prefix + f"{ffn}.dense.weight"], theirs[prefix + "output.dense.weight"])
            assert torch.equal(ours[prefix + f"{ffn}.LayerNorm.bias"], theirs[prefix + "output.LayerNorm.bias"])
    # Cross-attention has no BERT counterpart: untouched, and reported.
    assert torch.equal(qformer.encoder.layer[0].crossattention.attention.query.weight, fresh_cross)
    assert "query_tokens" in left_fresh
    assert all("crossattention" in k or k in ("query_tokens",) or k.startswith("vision_layernorm") for k in left_fresh)


def test_minilm_text_path_computes_what_bert_computes(minilm):
    bert, tokenizer = minilm
    qformer = QFormer(QFormerConfig(), ENCODER_WIDTH).eval()
    init_qformer_from_bert(qformer)
    tokens = tokenizer(["a navy blue shirt with long sleeves", "black dress"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = bert(**tokens).last_hidden_state
        ours = qformer(tokens["input_ids"], tokens["attention_mask"], use_queries=False).text_output
    valid = tokens["attention_mask"].bool()
    assert torch.allclose(ours[valid], expected[valid], atol=1e-4)


def test_bert_initialisation_rejects_a_mismatched_shape():
    qformer = QFormer(QFormerConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64), ENCODER_WIDTH)
    with pytest.raises(ConfigError, match="hidden_size"):
        init_qformer_from_bert(qformer)
