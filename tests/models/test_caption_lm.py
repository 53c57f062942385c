"""CaptionLM: ITG loss, caption generation, persistence and the offline pretrained + LoRA path."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from unifashion.models.caption_lm import (
    CAPTION_INSTRUCTIONS,
    CaptionLM,
    CaptionLMConfig,
    LLMAdapter,
    resolve_special_token_ids,
)

QUERY_DIM = 48
NUM_QUERIES = 4


def small_config(**overrides) -> CaptionLMConfig:
    """A much smaller LM than the tiny preset so each test takes a fraction of a second."""
    values = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=128, max_caption_tokens=12)
    values.update(overrides)
    return CaptionLMConfig(**values)


@pytest.fixture(scope="module")
def caption_lm() -> CaptionLM:
    torch.manual_seed(0)
    return CaptionLM(small_config(), QUERY_DIM).eval()


def queries(batch_size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, NUM_QUERIES, QUERY_DIM, generator=torch.Generator().manual_seed(seed))


CAPTIONS = ["a red floral dress with long sleeves", "blue shirt", "a black and white striped top"]
STYLES = ["short", "professional", "detailed"]


def test_config_json_round_trip():
    config = small_config(pretrained_path="/models/vicuna", lora_target_modules=["q_proj"], freeze_lm=True)
    assert CaptionLMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError):
        CaptionLMConfig.from_dict({"not_a_field": 1})


def test_instructions_cover_the_three_styles():
    assert set(CAPTION_INSTRUCTIONS) == {"short", "professional", "detailed"}


def test_minilm_tokenizer_uses_cls_as_bos_and_sep_as_eos(caption_lm):
    tokenizer = caption_lm.tokenizer
    special = resolve_special_token_ids(tokenizer)
    assert (special.bos, special.eos, special.pad) == (
        tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    )
    assert caption_lm.lm.config.vocab_size == len(tokenizer)
    assert caption_lm.lm.config.tie_word_embeddings is False


def test_adapter_is_a_linear_map_to_the_lm_width(caption_lm):
    assert isinstance(caption_lm.adapter, LLMAdapter)
    assert caption_lm.adapter.proj.in_features == QUERY_DIM
    assert caption_lm.adapter.proj.out_features == caption_lm.lm.config.hidden_size


def test_itg_loss_matches_cross_entropy_recomputed_by_hand(caption_lm):
    query_embeds = queries(3)
    output = caption_lm(query_embeds, CAPTIONS, STYLES)
    vocab = len(caption_lm.tokenizer)
    assert output.logits.shape[0] == 3 and output.logits.shape[2] == vocab

    # Rebuild the targets independently: the caption (+eos) follows queries, bos and instruction.
    tokenizer, special = caption_lm.tokenizer, caption_lm.special_ids
    log_probs = F.log_softmax(output.logits.float(), dim=-1)
    total, count = 0.0, 0
    for row, (caption, style) in enumerate(zip(CAPTIONS, STYLES, strict=True)):
        instruction = tokenizer(CAPTION_INSTRUCTIONS[style], add_special_tokens=False)["input_ids"]
        caption_ids = tokenizer(caption, add_special_tokens=False)["input_ids"] + [special.eos]
        first = NUM_QUERIES + 1 + len(instruction)  # position of the first caption token
        for offset, token in enumerate(caption_ids):
            total -= log_probs[row, first + offset - 1, token].item()  # predicted one step earlier
            count += 1
    assert output.logits.shape[1] == max(
        NUM_QUERIES + 1 + len(tokenizer(CAPTION_INSTRUCTIONS[s], add_special_tokens=False)["input_ids"])
        + len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1
        for c, s in zip(CAPTIONS, STYLES, strict=True)
    )
    assert output.loss.item() == pytest.approx(total / count, rel=1e-5)


def test_itg_loss_trains_the_adapter(caption_lm):
    caption_lm.zero_grad()
    caption_lm(queries(2), CAPTIONS[:2], STYLES[:2]).loss.backward()
    assert caption_lm.adapter.proj.weight.grad is not None
    assert caption_lm.adapter.proj.weight.grad.abs().sum() > 0
    caption_lm.zero_grad()


def test_captions_are_cut_to_max_caption_tokens(caption_lm):
    long_caption = " ".join(["red"] * 50)
    ids = caption_lm.caption_ids(long_caption)
    assert len(ids) == caption_lm.config.max_caption_tokens
    assert ids[-1] == caption_lm.special_ids.eos


def test_unknown_style_is_rejected(caption_lm):
    with pytest.raises(ValueError, match="caption style"):
        caption_lm(queries(1), ["a dress"], ["poetic"])


def test_generate_greedy_beam_and_sampling(caption_lm):
    query_embeds = queries(2)
    greedy = caption_lm.generate(query_embeds, "short", max_new_tokens=6)
    beam = caption_lm.generate(query_embeds, "detailed", max_new_tokens=6, num_beams=3)
    sampled = caption_lm.generate(query_embeds, "professional", max_new_tokens=6, do_sample=True,
                                  temperature=0.8, top_p=0.9, seed=7)
    again = caption_lm.generate(query_embeds, "professional", max_new_tokens=6, do_sample=True,
                                temperature=0.8, top_p=0.9, seed=7)
    for captions in (greedy, beam, sampled):
        assert isinstance(captions, list) and len(captions) == 2
        assert all(isinstance(text, str) for text in captions)
    assert sampled == again


def test_greedy_first_token_is_the_argmax_after_the_prefix(caption_lm):
    query_embeds = queries(1)
    prefix = caption_lm.instruction_ids("short")
    embeds = torch.cat([
        caption_lm.adapter(query_embeds),
        caption_lm.lm.get_input_embeddings()(torch.tensor([prefix])),
    ], dim=1)
    with torch.no_grad():
        first_token = caption_lm.lm(inputs_embeds=embeds).logits[0, -1].argmax().item()
    expected = caption_lm.tokenizer.decode([first_token], skip_special_tokens=True).strip()
    generated = caption_lm.generate(query_embeds, "short", max_new_tokens=1)[0]
    assert generated == expected


def test_state_dict_saves_with_safetensors_and_reloads(caption_lm, tmp_path):
    from safetensors.torch import load_file, save_file

    save_file(caption_lm.state_dict(), tmp_path / "weights.safetensors")
    caption_lm.save_pretrained(tmp_path / "caption_lm")
    assert (tmp_path / "caption_lm" / "tokenizer").is_dir()
    reloaded = CaptionLM.from_pretrained(tmp_path / "caption_lm", QUERY_DIM).eval()
    reloaded.load_state_dict(load_file(tmp_path / "weights.safetensors"))
    query_embeds = queries(2)
    with torch.no_grad():
        expected = caption_lm(query_embeds, CAPTIONS[:2], STYLES[:2]).loss
        actual = reloaded(query_embeds, CAPTIONS[:2], STYLES[:2]).loss
    torch.testing.assert_close(actual, expected)


# ---------------------------------------------------------------- paper preset layout, offline
def write_tiny_llama_checkpoint(directory) -> None:
    """A random LlamaForCausalLM plus a byte-level BPE tokenizer with <s>/</s>, as a local model dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CAPTIONS + list(CAPTION_INSTRUCTIONS.values()), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)


def test_pretrained_llama_loads_offline_with_lora(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_tiny_llama_checkpoint(tmp_path / "llama")
    config = CaptionLMConfig(pretrained_path=str(tmp_path / "llama"), lora_r=4, lora_alpha=8,
                             lora_dropout=0.0, max_caption_tokens=8)
    model = CaptionLM(config, QUERY_DIM)

    special = model.special_ids
    assert (special.bos, special.eos) == (model.tokenizer.bos_token_id, model.tokenizer.eos_token_id)
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable, "LoRA and adapter weights must be trainable"
    assert all("lora_" in name or name.startswith("adapter.") for name in trainable)
    assert any("lora_A" in name for name in trainable)
    lora_a = next(module for name, module in model.lm.named_modules() if name.endswith("q_proj.lora_A.default"))
    assert lora_a.out_features == 4

    output = model(queries(2), CAPTIONS[:2], STYLES[:2])
    output.loss.backward()
    assert model.adapter.proj.weight.grad is not None
    model.eval()
    captions = model.generate(queries(2), "short", max_new_tokens=4, num_beams=2)
    assert len(captions) == 2 and all(isinstance(text, str) for text in captions)


def test_freeze_lm_leaves_only_the_adapter_trainable():
    model = CaptionLM(small_config(freeze_lm=True), QUERY_DIM)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"adapter.proj.weight", "adapter.proj.bias"}


def test_decoded_hyphens_are_joined():
    from unifashion.models.caption_lm import _join_hyphens

    assert _join_hyphens("a v - neck t - shirt") == "a v-neck t-shirt"
    assert _join_hyphens("black - and white") == "black-and white"
    assert _join_hyphens("a dress - nothing else") == "a dress-nothing else"


# ---------------------------------------------------------------- a vocabulary sized for the captions
def test_caption_vocabulary_holds_specials_then_the_text_tokens_then_frequent_words(caption_lm):
    from unifashion.models.caption_lm import caption_vocabulary

    tokenizer = caption_lm.tokenizer
    vocabulary = caption_vocabulary(tokenizer, CAPTIONS + ["floral floral"], size=64)
    assert len(vocabulary) == len(set(vocabulary)) == 64
    specials = list(dict.fromkeys(tokenizer.all_special_ids))
    assert vocabulary[: len(specials)] == specials
    text_tokens = {t for c in CAPTIONS for t in tokenizer(c, add_special_tokens=False)["input_ids"]}
    head = vocabulary[len(specials): len(specials) + len(text_tokens)]
    assert set(head) == text_tokens
    assert head[0] == tokenizer.convert_tokens_to_ids("floral")  # the most frequent comes first
    filled = [tokenizer.convert_ids_to_tokens(i) for i in vocabulary[len(specials) + len(text_tokens):]]
    assert filled and not any(t.startswith("[") for t in filled)
    with pytest.raises(ValueError, match="special tokens"):
        caption_vocabulary(tokenizer, CAPTIONS, size=3)


def test_a_compact_tied_vocabulary_trains_and_writes_captions_in_tokenizer_words():
    from unifashion.models.caption_lm import caption_vocabulary, instruction_texts

    base = CaptionLM(small_config(), QUERY_DIM)
    vocabulary = caption_vocabulary(base.tokenizer, CAPTIONS + instruction_texts(base.config), size=80)
    torch.manual_seed(0)
    lm = CaptionLM(small_config(vocabulary=vocabulary, tie_word_embeddings=True), QUERY_DIM)
    assert lm.lm.config.vocab_size == 80
    assert lm.lm.get_output_embeddings().weight is lm.lm.get_input_embeddings().weight
    # Caption ids live in the LM's space and decode back to the caption; an unknown word is [UNK].
    ids = lm.caption_ids(CAPTIONS[0])
    assert max(ids) < 80 and ids[-1] == lm.special_ids.eos
    assert lm.decode(torch.tensor([ids]))[0] == CAPTIONS[0]
    unknown = lm.caption_ids("a zeppelin dress")
    assert lm.vocabulary.unk in unknown
    assert lm.decode(torch.tensor([unknown]))[0] == "a dress"
    # Training on the captions lowers the loss, and greedy decoding writes one of them back.
    optimiser = torch.optim.Adam(lm.parameters(), lr=3e-2)
    query_embeds = queries(3)
    first = None
    for _ in range(150):
        loss = lm(query_embeds, CAPTIONS, STYLES).loss
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.1 * first
    lm.eval()
    assert lm.generate(query_embeds[:1], style="short", max_new_tokens=12)[0] == CAPTIONS[0]


def test_a_preset_vocabulary_size_builds_one_and_the_config_records_it():
    lm = CaptionLM(small_config(vocabulary_size=300), QUERY_DIM)
    assert lm.config.vocabulary is not None and len(lm.config.vocabulary) == 300
    assert lm.lm.config.vocab_size == 300
    rebuilt = CaptionLM(lm.config, QUERY_DIM)
    assert rebuilt.vocabulary.token_ids == lm.vocabulary.token_ids


def test_a_bad_vocabulary_is_a_clear_error():
    base = CaptionLM(small_config(), QUERY_DIM)
    unk, cls = base.tokenizer.unk_token_id, base.tokenizer.cls_token_id
    with pytest.raises(ValueError, match="unknown token"):
        CaptionLM(small_config(vocabulary=[cls, 2000]), QUERY_DIM)
    with pytest.raises(ValueError, match="repeats"):
        CaptionLM(small_config(vocabulary=[unk, cls, cls]), QUERY_DIM)
    with pytest.raises(ValueError, match="outside"):
        CaptionLM(small_config(vocabulary=[unk, 10**6]), QUERY_DIM)
    with pytest.raises(ValueError, match="eos token"):
        CaptionLM(small_config(vocabulary=[unk, cls, 0]), QUERY_DIM)


def test_table7_prompts_put_the_queries_inside_the_user_turn():
    from unifashion.models.caption_lm import TABLE7_INSTRUCTIONS, TABLE7_PROMPT_TEMPLATE

    # The paper's Table 7, with <image> where the queries go.
    table7 = {"short": "USER:<image>+Short description. Assistant:",
              "professional": "USER:<image>+Write a detail and professional description for the cloth. Assistant:",
              "detailed": "USER:<image>+Describe the cloth's style, color, design... and other key points. Assistant:"}
    for style, text in table7.items():
        rendered = TABLE7_PROMPT_TEMPLATE.replace("{instruction}", TABLE7_INSTRUCTIONS[style])
        assert rendered.replace("{image}", "<image>") == text
    torch.manual_seed(0)
    lm = CaptionLM(small_config(prompt_template=TABLE7_PROMPT_TEMPLATE, instructions=TABLE7_INSTRUCTIONS),
                   QUERY_DIM).eval()
    before, after = lm.prompt_ids("short")
    tok = lm.tokenizer
    assert before == [lm.special_ids.bos] + tok("USER:", add_special_tokens=False)["input_ids"]
    assert after == tok("+Short description. Assistant:", add_special_tokens=False)["input_ids"]
    query_embeds = queries(2, seed=3)
    with torch.no_grad():
        embeds, mask, labels = lm.build_training_inputs(query_embeds, CAPTIONS[:2], ["short", "detailed"])
        adapted = lm.adapter(query_embeds)
        table = lm.lm.get_input_embeddings()
        # Row 0: [bos USER:] [queries] [+Short description. Assistant:] [caption eos] [pad].
        n = len(before)
        assert torch.allclose(embeds[0, :n], table(torch.tensor(before)))
        assert torch.allclose(embeds[0, n:n + NUM_QUERIES], adapted[0])
        assert torch.allclose(embeds[0, n + NUM_QUERIES:n + NUM_QUERIES + len(after)], table(torch.tensor(after)))
        caption = lm.caption_ids(CAPTIONS[0])
        start = n + NUM_QUERIES + len(after)
        assert labels[0, start:start + len(caption)].tolist() == caption
        assert (labels[0, :start] == -100).all() and mask[0].sum() == start + len(caption)
        # Generation reads the same layout: its first token is the argmax after the prompt.
        prefix = torch.cat([table(torch.tensor(before)), adapted[0], table(torch.tensor(after))])[None]
        first = lm.lm(inputs_embeds=prefix).logits[0, -1].argmax().item()
    assert lm.generate(query_embeds[:1], "short", max_new_tokens=1)[0] == tok.decode([first],
                                                                                    skip_special_tokens=True).strip()
    with pytest.raises(ValueError, match="caption style"):
        CaptionLM(small_config(instructions={"short": "x"}), QUERY_DIM).prompt_ids("detailed")
