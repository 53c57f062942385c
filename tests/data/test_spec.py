"""Parsing `--data` specs and reading sources for one split."""

from __future__ import annotations

import pytest

from dataset_layouts import write_fashion_iq, write_image_folder
from unifashion.data.errors import DatasetNotFoundError
from unifashion.data.spec import (
    DataSpecError,
    LoadedSource,
    holdout_part,
    load_source,
    mixture_weights,
    parse_data_spec,
)


def test_sources_weights_options_and_aliases(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sources = parse_data_spec(f"fashion-iq:{a}?split=val&categories=dress+shirt@2, imagefolder:{b}?style=short@1")
    assert [(s.kind, s.weight) for s in sources] == [("fashioniq", 2.0), ("imagefolder", 1.0)]
    assert sources[0].options == {"split": "val", "categories": "dress+shirt"} and sources[1].style == "short"
    assert sources[0].style == "detailed"
    assert parse_data_spec(sources[1].describe())[0] == sources[1]
    with pytest.raises(DataSpecError, match="style must be one of"):
        parse_data_spec(f"imagefolder:{b}?style=poetic")
    with pytest.raises(DataSpecError, match="holdout must be a fraction"):
        parse_data_spec(f"imagefolder:{b}?holdout=1.5")
    with pytest.raises(DataSpecError, match="empty source"):
        parse_data_spec(f"imagefolder:{b},,imagefolder:{a}")
    with pytest.raises(DatasetNotFoundError, match="missing-dir"):
        parse_data_spec(f"fashion200k:{tmp_path / 'missing-dir'}")


def test_mixture_weights_give_each_source_its_share(tmp_path):
    sources = parse_data_spec(f"imagefolder:{tmp_path}@3,imagefolder:{tmp_path}@1")
    loaded = [LoadedSource(s, "train", []) for s in sources]
    weights = mixture_weights(loaded, [10, 30])
    assert len(weights) == 40
    assert sum(weights[:10]) == pytest.approx(0.75) and sum(weights[10:]) == pytest.approx(0.25)
    assert mixture_weights([LoadedSource(parse_data_spec(f"imagefolder:{tmp_path}")[0], "train", [])], [5]) is None


def test_image_folder_parts_are_disjoint_and_stable(tmp_path):
    root = write_image_folder(tmp_path / "shop", n=40)
    source = parse_data_spec(f"imagefolder:{root}?holdout=0.25")[0]
    train, test = load_source(source, "train"), load_source(source, "test")
    train_ids, test_ids = {r.item_id for r in train.items}, {r.item_id for r in test.items}
    assert not train_ids & test_ids and len(train_ids | test_ids) == 40 and 3 <= len(test_ids) <= 18
    assert all(r.captions == {"professional": r.captions["professional"]} for r in train.items)
    assert holdout_part("sku0001", 0.25) == holdout_part("sku0001", 0.25)


def test_fashion_iq_keeps_category_galleries_apart(tmp_path):
    root = write_fashion_iq(tmp_path / "fiq", n=6)
    loaded = load_source(parse_data_spec(f"fashioniq:{root}")[0], "val")
    assert {r.category for r in loaded.items} == {"dress", "shirt"} and len(loaded.items) == 12
    assert all(r.item_id.startswith(f"{r.category}/") for r in loaded.items)
    assert all(t.reference_id.split("/")[0] == t.category for t in loaded.triplets)
    assert all(r.captions.get("detailed") for r in loaded.items)  # Fashion-IQ-cap captions, detailed style
