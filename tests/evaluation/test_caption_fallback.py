"""Caption metrics without Java: the simple tokenizer, METEOR skipped, and rows that say so."""

from __future__ import annotations

import pytest

from conftest import requires
from unifashion.evaluation import captioning
from unifashion.evaluation.captioning import caption_metrics, caption_toolkit, simple_tokenize


def test_simple_tokenize_lowercases_and_drops_punctuation():
    assert simple_tokenize({"a": ["A Red, striped Dress.", "it's (long)-sleeved!"]}) == {
        "a": ["a red striped dress", "it's long sleeved"]}


def test_without_java_bleu_rouge_cider_are_scored_and_meteor_is_skipped(monkeypatch):
    monkeypatch.setattr(captioning, "java_available", lambda: False)
    refs = {"1": ["a red dress with long sleeves"], "2": ["a blue striped shirt"]}
    same = caption_metrics(refs, {"1": "A red dress, with long sleeves.", "2": "a blue striped shirt"})
    assert "METEOR" not in same
    assert same["BLEU-1"] == pytest.approx(1.0) and same["ROUGE-L"] == pytest.approx(1.0)
    other = caption_metrics(refs, {"1": "a green skirt", "2": "a blue striped shirt"})
    assert other["BLEU-1"] < same["BLEU-1"] and other["CIDEr"] < same["CIDEr"]
    assert "no Java" in caption_toolkit()


@requires("java")
def test_the_fallback_tokenizer_gives_the_ptb_tokenizers_scores_on_plain_captions(monkeypatch):
    refs = {"1": ["a red dress with long sleeves."], "2": ["a blue, striped shirt"], "3": ["navy plaid skirt"]}
    preds = {"1": "a red dress with short sleeves", "2": "a blue shirt", "3": "a navy plaid mini skirt"}
    with_java = caption_metrics(refs, preds, meteor=False)
    monkeypatch.setattr(captioning, "java_available", lambda: False)
    without = caption_metrics(refs, preds)
    for metric in ("BLEU-4", "ROUGE-L", "CIDEr"):
        assert without[metric] == pytest.approx(with_java[metric], abs=1e-9), metric
