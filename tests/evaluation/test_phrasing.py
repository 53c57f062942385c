"""The shopper-phrasing protocol: wording apart from the templates, metrics against a hand count."""

from __future__ import annotations

import re

import numpy as np
import pytest

from unifashion.data.records import ItemRecord
from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
from unifashion.evaluation.phrasing import (
    CATEGORY_WORDS,
    COLOUR_WORDS,
    PATTERN_WORDS,
    PROTOCOL,
    evaluate_phrasing,
    phrasing_metrics,
    phrasing_queries,
    template_query,
)
from unifashion.evaluation.results import ResultTable


def item(i: int, category: str, colour: str, pattern: str) -> ItemRecord:
    return ItemRecord(item_id=f"i{i}", image="unused.png", category=category,
                      attributes={"category": category, "colour": colour, "pattern": pattern})


def test_every_shopper_phrase_has_a_word_the_templates_never_use():
    catalogue = make_catalogue(CatalogueConfig(n_items=600))
    texts = [c for it in catalogue.items for c in it.captions.values()]
    texts += [c for t in catalogue.triplets for c in t.relative_captions]
    template_words = {w for text in texts for w in re.findall(r"[a-z]+", text.lower())}
    for table in (COLOUR_WORDS, PATTERN_WORDS, CATEGORY_WORDS):
        assert set(table) >= ({"dress", "skirt"} if table is CATEGORY_WORDS else set())
        for phrases in table.values():
            for phrase in phrases:
                assert set(re.findall(r"[a-z]+", phrase)) - template_words, phrase


def test_queries_ask_for_each_triple_of_the_split_in_both_wordings():
    items = [item(0, "dress", "red", "dots"), item(1, "dress", "red", "dots"), item(2, "pants", "grey", "plaid")]
    queries = phrasing_queries(items, seed=3)
    assert [(q.category, q.colour, q.pattern, q.wording) for q in queries] == [
        ("dress", "red", "dots", "template"), ("dress", "red", "dots", "shopper"),
        ("pants", "grey", "plaid", "template"), ("pants", "grey", "plaid", "shopper")]
    assert queries[0].text == template_query("dress", "red", "dots") == "red polka dot dress"
    assert "red" not in queries[1].text and "dress" not in queries[1].text
    assert phrasing_queries(items, seed=3) == queries  # seeded


def test_metrics_match_a_count_by_hand():
    items = [item(0, "dress", "red", "dots"), item(1, "dress", "blue", "dots"), item(2, "shirt", "red", "solid")]
    queries = phrasing_queries(items)[:2]  # template and shopper of ("dress", "blue", "dots")
    assert queries[0].colour == "blue"
    # Template: item 1 ranked first (right), shopper: item 2 first (wrong on category and pattern).
    similarity = np.array([[0.5, 0.9, 0.1], [0.2, 0.1, 0.9]])
    metrics = phrasing_metrics(similarity, queries, items, k=2)
    assert metrics["template"] == {"P@2": 50.0, "category@1": 100.0, "colour@1": 100.0, "pattern@1": 100.0}
    assert metrics["shopper"] == {"P@2": 0.0, "category@1": 0.0, "colour@1": 0.0, "pattern@1": 0.0}
    with pytest.raises(ValueError, match="expected"):
        phrasing_metrics(similarity[:, :2], queries, items)


def test_an_oracle_scores_full_marks_and_rows_name_the_wording():
    rng = np.random.default_rng(0)
    items = [item(i, c, col, p) for i, (c, col, p) in enumerate(
        (c, col, p) for c in ("dress", "pants") for col in ("red", "navy") for p in ("solid", "floral")
        for _ in range(10))]
    rng.shuffle(items)

    def oracle(texts):
        queries = phrasing_queries(items)
        assert [q.text for q in queries] == texts
        return np.array([[float(r.attributes["category"] == q.category and r.attributes["colour"] == q.colour
                                and r.attributes["pattern"] == q.pattern) for r in items] for q in queries])

    table = ResultTable()
    evaluate_phrasing(oracle, items, table, "oracle", "test")
    values = {(row.protocol, row.metric): row.value for row in table.rows}
    assert values[(f"{PROTOCOL}, shopper wording", "P@10")] == 100.0
    assert values[(f"{PROTOCOL}, template wording", "colour@1")] == 100.0
    assert len(table.rows) == 8
