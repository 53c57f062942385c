"""Triplet mining: the caption parser, the pairing, the filters and the precision measure, with stub
captioners (the true detailed captions, and corrupted ones) on a small synthetic catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.mining import (
    CaptionParseError,
    MiningConfig,
    collection_records,
    edit_names,
    mine_triplets,
    mining_precision,
    parse_detailed_caption,
)
from unifashion.data.synthetic.attributes import CATEGORIES
from unifashion.data.synthetic.captions import detailed_caption
from unifashion.data.synthetic.catalogue import (
    CatalogueConfig,
    make_catalogue,
    read_triplets_jsonl,
    triplet_row,
    write_triplets_jsonl,
)


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue(CatalogueConfig(n_items=240, seed=3))


@pytest.fixture(scope="module")
def truth(catalogue):
    return {it.item_id: it.attributes for it in catalogue.items}


@pytest.fixture(scope="module")
def true_captions(catalogue):
    """The stub captioner that is always right: the catalogue's own detailed captions."""
    return {it.item_id: it.captions["detailed"] for it in catalogue.items}


def test_parser_inverts_every_detailed_caption(catalogue):
    for item in catalogue.items:
        assert parse_detailed_caption(item.captions["detailed"]) == item.attributes
        # Other seeds word the caption differently; the parse is the same.
        assert parse_detailed_caption(detailed_caption(item.attributes, seed=item.seed + 7)) == item.attributes


@pytest.mark.parametrize("text, reason", [
    ("a red dress", "length"),
    ("a crimson dress with no sleeves, a collar and a tight fit, knee length", "colour"),
    ("a red skirt with no sleeves and a tight fit, knee length", "no sleeve"),
    ("a red dress with no sleeves, a collar and a tight fit, ankle length", "length"),
    ("a solid red dress with white stripes, no sleeves, a collar and a tight fit, knee length", "solid"),
    ("a red dress with no sleeves, long sleeves, a collar and a tight fit, knee length", "twice"),
    ("a red dress with no sleeves, a collar and a great fit, knee length", "unknown phrase"),
    ("a light black dress with no sleeves, a collar and a tight fit, knee length", "black"),
    ("a red dress with no sleeves and a tight fit, knee length", "neckline"),
])
def test_parser_rejects_what_the_grammar_or_vocabulary_forbids(text, reason):
    with pytest.raises(CaptionParseError):
        parse_detailed_caption(text)


def test_mining_true_captions_is_exact(tmp_path, catalogue, truth, true_captions):
    train = {i: c for i, c in true_captions.items() if catalogue.item(i).split == "train"}
    result = mine_triplets(train, config=MiningConfig(targets_per_reference=2, seed=1))
    assert result.counts.get("unparsed", 0) == 0 and result.counts.get("implausible", 0) == 0
    assert len(result.triplets) > 100
    for t in result.triplets:
        ref, tgt = truth[t.reference_id], truth[t.target_id]
        assert ref["category"] == tgt["category"] == t.category  # no category changes
        assert 1 <= len(edit_names(ref, tgt)) <= 3
        assert len(t.relative_captions) == 2 and all(t.relative_captions)
        assert t.reference_id != t.target_id
    assert len({(t.reference_id, t.target_id) for t in result.triplets}) == len(result.triplets)
    precision = mining_precision(result.triplets, result.attributes, truth)
    assert precision["claim_precision"]["overall"] == 100.0
    assert precision["triplet_precision"] == 100.0
    assert set(precision["claim_precision"]) - {"overall"} <= {"colour", "lightness", "pattern", "sleeve", "length",
                                                              "fit", "neckline"}
    # Deterministic for a seed; another seed pairs differently.
    again = mine_triplets(train, config=MiningConfig(targets_per_reference=2, seed=1))
    assert [(t.reference_id, t.target_id, t.relative_captions) for t in again.triplets] == \
        [(t.reference_id, t.target_id, t.relative_captions) for t in result.triplets]
    # The file round-trips through the loader that reads catalogue triplets.
    path = write_triplets_jsonl(tmp_path / "mined.jsonl", (triplet_row(t, "train", source="mined")
                                                           for t in result.triplets))
    loaded = read_triplets_jsonl(path, set(truth))
    assert loaded == result.triplets
    with pytest.raises(DatasetFormatError, match="not in items.jsonl"):
        read_triplets_jsonl(path, {"dress-000000"})
    with pytest.raises(DatasetNotFoundError):
        read_triplets_jsonl(tmp_path / "missing.jsonl")


def _corrupt_colour(attrs: dict) -> dict:
    wrong = dict(attrs)
    wrong["colour"] = "red" if attrs["colour"] != "red" else "green"
    if wrong.get("pattern_colour") == wrong["colour"]:
        wrong["pattern_colour"] = "white" if wrong["colour"] != "white" else "black"
    return wrong


def test_corrupted_captions_lower_precision_and_the_filters_catch_them(catalogue, truth):
    rng = np.random.default_rng(0)
    train = [it for it in catalogue.items if it.split == "train"]
    captions, agreement, garbled, recoloured = {}, {}, set(), set()
    for k, item in enumerate(train):
        roll = rng.random()
        if roll < 0.1:
            captions[item.item_id] = "a stylish garment for every occasion"  # does not parse
            garbled.add(item.item_id)
        elif roll < 0.35:
            captions[item.item_id] = detailed_caption(_corrupt_colour(item.attributes), seed=k)
            recoloured.add(item.item_id)
        else:
            captions[item.item_id] = item.captions["detailed"]
        agreement[item.item_id] = 0.1 if item.item_id in recoloured else 0.9  # the captioner doubts the wrong ones
    # One implausible caption: a pattern in the garment's own colour.
    implausible = next(it for it in train if it.attributes["pattern"] == "stripes" and it.item_id not in garbled)
    a = dict(implausible.attributes, pattern_colour=implausible.attributes["colour"])
    captions[implausible.item_id] = detailed_caption(a)
    recoloured.discard(implausible.item_id)

    unfiltered = mine_triplets(captions, config=MiningConfig(agreement_quantile=0.0, seed=0))
    assert unfiltered.counts["unparsed"] == len(garbled)
    assert unfiltered.counts["implausible"] == 1
    assert not set(unfiltered.attributes) & (garbled | {implausible.item_id})
    p = mining_precision(unfiltered.triplets, unfiltered.attributes, truth)
    assert p["claim_precision"]["overall"] < 100.0 and p["triplet_precision"] < 100.0
    assert p["caption_accuracy"]["colour"] < 100.0 and p["caption_accuracy"]["fit"] == 100.0
    # Only the colour could be wrong: every other attribute's claims are right.
    assert all(v == 100.0 for k, v in p["claim_precision"].items() if k not in ("overall", "colour", "lightness"))
    assert any({t.reference_id, t.target_id} & recoloured for t in unfiltered.triplets)

    share = len(recoloured & set(unfiltered.attributes)) / len(unfiltered.attributes)
    filtered = mine_triplets(captions, agreement, MiningConfig(agreement_quantile=share, seed=0))
    assert filtered.counts["low_agreement"] >= 1
    assert not set(filtered.attributes) & recoloured
    pf = mining_precision(filtered.triplets, filtered.attributes, truth)
    assert pf["claim_precision"]["overall"] == 100.0


def test_duplicates_and_pair_filter(catalogue, true_captions):
    train = [it.item_id for it in catalogue.items if it.split == "train"][:60]
    captions = {i: true_captions[i] for i in train}
    twin = train[0] + "-twin"
    captions[twin] = captions[train[0]]  # the same caption: the same item to the captioner
    agreement = {i: 0.5 for i in captions}
    agreement[twin] = 0.9
    result = mine_triplets(captions, agreement, MiningConfig(agreement_quantile=0.0))
    assert result.counts["duplicate"] >= 1
    assert twin in result.attributes and train[0] not in result.attributes  # the better-agreeing one stays
    # A scorer under which every image prefers the other caption drops every pair.
    none = mine_triplets(captions, agreement, MiningConfig(agreement_quantile=0.0),
                         pair_score=lambda image, caption: 0.0 if image == caption else 1.0)
    assert none.triplets == [] and none.counts["pair_disagreement"] > 0
    every = mine_triplets(captions, agreement, MiningConfig(agreement_quantile=0.0),
                          pair_score=lambda image, caption: 1.0 if image == caption else 0.0)
    assert len(every.triplets) == len(result.triplets)
    # Already-annotated pairs are not mined again.
    pairs = {(t.reference_id, t.target_id) for t in result.triplets[:5]}
    excluded = mine_triplets(captions, agreement, MiningConfig(agreement_quantile=0.0), exclude_pairs=pairs)
    assert excluded.counts["same_pair"] == 5
    assert not pairs & {(t.reference_id, t.target_id) for t in excluded.triplets}


def test_mining_config_rejects_bad_values():
    with pytest.raises(ValueError, match="min_changes"):
        MiningConfig(min_changes=0)
    with pytest.raises(ValueError, match="agreement_quantile"):
        MiningConfig(agreement_quantile=1.0)
    with pytest.raises(ValueError, match="targets_per_reference"):
        MiningConfig(targets_per_reference=0)


def test_collection_records_reads_a_plain_image_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "sub/b.jpg"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    records = collection_records(tmp_path)
    assert [r.item_id for r in records] == ["a", "sub/b"]
    assert records[0].load_image().size == (8, 8)
    with pytest.raises(ValueError, match="split"):
        collection_records(tmp_path, split="train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        collection_records(tmp_path / "empty")


def test_categories_in_parser_cover_the_vocabulary():
    # Every category's every length reads back (the parser's length table is the captions' own).
    for category, spec in CATEGORIES.items():
        for length in spec["lengths"]:
            attrs = {"category": category, "colour": "navy", "lightness": "dark", "pattern": "solid", "length": length,
                     "fit": "loose"}
            if spec["sleeves"]:
                attrs["sleeve"] = "long"
            if spec["neckline"]:
                attrs["neckline"] = "square"
            assert parse_detailed_caption(detailed_caption(attrs)) == attrs


def test_edit_verification_drops_edits_the_images_do_not_show():
    """A stub scorer that sees colours only: an image embedding is its true colour, one-hot; a text
    embedding marks the colours it names. A claimed colour edit passes only when both images show it."""
    import torch

    from unifashion.data.synthetic.attributes import COLOURS
    from unifashion.pipelines.mining import CaptionScorer

    colours = list(COLOURS)

    def encode_text(texts):
        return torch.tensor([[1.0 if c in t.replace(",", " ").split() else 0.0 for c in colours] for t in texts])

    def one_hot(colour):
        return torch.tensor([[1.0 if c == colour else 0.0 for c in colours]])

    base = {"category": "skirt", "lightness": "medium", "pattern": "solid", "length": "knee", "fit": "loose"}
    true_colour = {"a": "green", "b": "blue", "c": "grey"}
    scorer = CaptionScorer(list(true_colour), torch.stack([one_hot(c) for c in true_colour.values()]),
                           torch.zeros(3, len(colours)), encode_text=encode_text)
    captioned = {"a": dict(base, colour="red"), "b": dict(base, colour="blue"), "c": dict(base, colour="grey")}
    keep = scorer.verify_edits([("a", captioned["a"], "b", captioned["b"]),  # a's colour is wrong: dropped
                                ("c", captioned["c"], "b", captioned["b"]),  # grey -> blue, both right: kept
                                ("c", captioned["c"], "b", dict(captioned["b"], fit="tight"))])  # fit unseen
    assert keep == [False, True, False]
    captions = {k: detailed_caption(v) for k, v in captioned.items()}
    result = mine_triplets(captions, config=MiningConfig(agreement_quantile=0.0, targets_per_reference=2),
                           edit_verifier=scorer.verify_edits)
    assert {(t.reference_id, t.target_id) for t in result.triplets} == {("b", "c"), ("c", "b")}
    assert result.counts["unverified_edit"] == 4
    with pytest.raises(ValueError, match="text encoder"):
        CaptionScorer(["a"], torch.zeros(1, 1, 2), torch.zeros(1, 2)).verify_edits([("a", base, "a", base)])
