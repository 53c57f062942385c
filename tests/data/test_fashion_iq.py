"""Fashion-IQ: the real annotation files (shared/data/fashion-iq) with placeholder images, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import SHARED_FASHION_IQ, requires
from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.fashion_iq import (
    FASHION_IQ_CATEGORIES,
    check_images,
    fashion_iq_protocol_name,
    load_fashion_iq,
    protocol_queries,
)
from unifashion.data.records import ItemDataset, TripletDataset

#: The ``shared`` folder beside the repository root holds the real Fashion-IQ annotations; the tests
#: that read them say so when it is missing (and fail under CI, which lays it there).
REAL_ROOT = SHARED_FASHION_IQ
needs_real = requires("fashion-iq")


def write_placeholder(image_dir: Path, image_id: str, suffix: str = ".png") -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 20), (len(image_id) * 9 % 256, 80, 120)).save(image_dir / f"{image_id}{suffix}")


def write_root(root: Path, category: str = "dress", split: str = "val", triplets=None, ids=None) -> Path:
    ids = ids if ids is not None else ["A1", "A2", "A3"]
    triplets = triplets if triplets is not None else [
        {"candidate": "A1", "target": "A2", "captions": ["is red", "has no sleeves."]},
        {"candidate": "A3", "target": "A1", "captions": ["is longer", " "]},
    ]
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "image_splits").mkdir(parents=True, exist_ok=True)
    (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(triplets))
    (root / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(ids))
    return root


# ----------------------------------------------------------------------------- the real annotations


@needs_real
def test_real_val_split_sizes():
    data = load_fashion_iq(REAL_ROOT, "val")
    assert list(data) == list(FASHION_IQ_CATEGORIES)
    sizes = {c: (len(d.gallery), len(d.triplets)) for c, d in data.items()}
    assert sizes == {"dress": (3817, 2017), "shirt": (6346, 2038), "toptee": (5373, 1961)}
    assert all(not d.added_ids for d in data.values())


@needs_real
def test_real_train_split_sizes_and_category_selection():
    data = load_fashion_iq(REAL_ROOT, "train", categories="dress")
    assert list(data) == ["dress"]
    assert (len(data["dress"].gallery), len(data["dress"].triplets)) == (11452, 5985)


@needs_real
def test_real_triplets_and_joined_captions():
    dress = load_fashion_iq(REAL_ROOT, "val", categories=["dress"])["dress"]
    first = dress.triplets[0]
    assert (first.reference_id, first.target_id) == ("B005X4PL1G", "B0084Y8XIU")  # candidate -> reference
    assert first.relative_captions == ["is shiny and silver with shorter sleeves", "fit and flare"]
    assert first.modification_text == "is shiny and silver with shorter sleeves and fit and flare"
    assert first.category == "dress" and first.changed_attributes == {}

    # shirt val has one triplet with an empty caption: the joined text must not dangle an "and".
    shirt = load_fashion_iq(REAL_ROOT, "val", categories=["shirt"])["shirt"]
    with_empty = [t for t in shirt.triplets if any(not c.strip() for c in t.relative_captions)]
    assert len(with_empty) == 1
    text = with_empty[0].modification_text
    assert text and not text.endswith(" and") and not text.startswith("and ")


@needs_real
def test_real_gallery_with_placeholder_images(tmp_path: Path):
    dress = load_fashion_iq(REAL_ROOT, "val", categories="dress", image_dir=tmp_path)["dress"]
    item = dress.gallery[0]
    assert item.image == tmp_path / f"{item.item_id}.png" and item.category == "dress"
    touched = dress.triplets[:3]
    for t in touched:
        write_placeholder(tmp_path, t.reference_id)
        write_placeholder(tmp_path, t.target_id)
    gallery = ItemDataset(dress.gallery)
    triplets = TripletDataset(touched, gallery)  # every id is in the gallery
    sample = triplets[1]
    assert sample["reference"].size == (16, 20)
    assert sample["target_index"] == gallery.index_of(touched[1].target_id)
    assert sample["text"] == touched[1].modification_text

    with pytest.raises(DatasetNotFoundError) as info:
        dress.check_images()
    message = str(info.value)
    assert str(tmp_path) in message and ".png" in message
    assert f"of {len(dress.gallery)} images missing" in message


# ----------------------------------------------------------------------------- fixture roots and bad files


def test_fixture_root_with_jpg_images(tmp_path: Path):
    root = write_root(tmp_path / "fiq")
    for image_id in ("A1", "A2", "A3"):
        write_placeholder(root / "images", image_id, ".jpg")
    data = load_fashion_iq(root, "val", categories="dress", image_extension="jpg")
    data["dress"].check_images()  # all present: no error
    assert [i.item_id for i in data["dress"].gallery] == ["A1", "A2", "A3"]
    assert data["dress"].triplets[0].modification_text == "is red and has no sleeves"
    assert data["dress"].triplets[1].modification_text == "is longer"
    assert data["dress"].gallery[0].load_image().size == (16, 20)


def test_missing_annotation_file_is_named(tmp_path: Path):
    root = write_root(tmp_path)
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_iq(root, "val", categories="shirt")
    assert "split.shirt.val.json" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        load_fashion_iq(tmp_path / "nowhere")


def test_malformed_json_is_named(tmp_path: Path):
    root = write_root(tmp_path)
    bad = root / "captions" / "cap.dress.val.json"
    bad.write_text('[{"candidate": "A1", "target": ')
    with pytest.raises(DatasetFormatError) as info:
        load_fashion_iq(root, "val", categories="dress")
    assert str(bad) in str(info.value) and "not valid JSON" in str(info.value)


def test_entry_without_target_is_named(tmp_path: Path):
    root = write_root(tmp_path, triplets=[{"candidate": "A1", "captions": ["is red", "red"]}])
    with pytest.raises(DatasetFormatError) as info:
        load_fashion_iq(root, "val", categories="dress")
    assert "cap.dress.val.json" in str(info.value) and "entry 0 has no 'target' field" in str(info.value)


def test_captions_must_be_strings(tmp_path: Path):
    root = write_root(tmp_path, triplets=[{"candidate": "A1", "target": "A2", "captions": "is red"}])
    with pytest.raises(DatasetFormatError, match="'captions' must be a list of strings"):
        load_fashion_iq(root, "val", categories="dress")


def test_split_not_listing_a_triplet_id_raises_by_default(tmp_path: Path):
    root = write_root(tmp_path, ids=["A1", "A3"])  # A2 is a target but not in the split
    with pytest.raises(DatasetFormatError) as info:
        load_fashion_iq(root, "val", categories="dress")
    message = str(info.value)
    assert "cap.dress.val.json" in message and "A2" in message and "split.dress.val.json" in message

    data = load_fashion_iq(root, "val", categories="dress", missing_ids="add")["dress"]
    assert data.added_ids == ["A2"]
    assert [i.item_id for i in data.gallery] == ["A1", "A3", "A2"]
    TripletDataset(data.triplets, ItemDataset(data.gallery))  # no KeyError: every query stays


def test_duplicate_split_id_is_named(tmp_path: Path):
    root = write_root(tmp_path, ids=["A1", "A2", "A3", "A2"])
    with pytest.raises(DatasetFormatError, match="'A2' is listed twice"):
        load_fashion_iq(root, "val", categories="dress")


def test_check_images_names_the_missing_file(tmp_path: Path):
    root = write_root(tmp_path)
    write_placeholder(root / "images", "A1")
    data = load_fashion_iq(root, "val", categories="dress")["dress"]
    with pytest.raises(DatasetNotFoundError) as info:
        check_images(data.gallery)
    assert str(root / "images" / "A2.png") in str(info.value)
    assert "2 of 3 images missing" in str(info.value) and "A3.png" in str(info.value)


@needs_real
def test_real_val_galleries_under_the_two_protocols():
    original = load_fashion_iq(REAL_ROOT, "val", gallery="split")
    val_protocol = load_fashion_iq(REAL_ROOT, "val", gallery="references-and-targets")
    assert {c: len(p.gallery) for c, p in original.items()} == {"dress": 3817, "shirt": 6346, "toptee": 5373}
    # VAL's gallery: the union of references and targets, without repeats.
    assert {c: len(p.gallery) for c, p in val_protocol.items()} == {"dress": 2628, "shirt": 3089, "toptee": 2902}
    for c, p in val_protocol.items():
        used = {i for t in p.triplets for i in (t.reference_id, t.target_id)}
        assert {r.item_id for r in p.gallery} == used
        assert len(p.triplets) == len(original[c].triplets)
    # Caption joins: one query per triplet, or one per caption (every real triplet has two).
    triplets = original["dress"].triplets
    assert len(protocol_queries(triplets, "and")) == 2017
    assert len(protocol_queries(triplets, "each")) == 2 * 2017
    ref, text, target = protocol_queries(triplets, "and")[0]
    assert text == triplets[0].modification_text and " and " in text


def test_protocol_names_and_bad_choices():
    assert fashion_iq_protocol_name() == "original protocol, gallery = the split's image list; the two captions " \
                                         "joined with ' and '"
    assert "VAL protocol" in fashion_iq_protocol_name("references-and-targets", "each")
    with pytest.raises(ValueError, match="gallery"):
        fashion_iq_protocol_name("union")
    with pytest.raises(ValueError, match="caption join"):
        protocol_queries([], "concat")


def test_split_data_from_a_fashion_iq_root_keeps_shared_ids_apart(tmp_path: Path):
    from unifashion.evaluation.results import ResultTable
    from unifashion.evaluation.runner import EvalArtifacts, EvalConfig, evaluate_random
    from unifashion.evaluation.split_data import SplitData

    root = write_root(tmp_path, "shirt", ids=["S1", "S2", "X"],
                      triplets=[{"candidate": "S1", "target": "X", "captions": ["is red", "is long"]}])
    write_root(root, "toptee", ids=["X", "T2"], triplets=[{"candidate": "T2", "target": "X", "captions": ["a", "b"]}])
    write_root(root, "dress", ids=["D1", "D2"], triplets=[{"candidate": "D1", "target": "D2", "captions": ["c", "d"]}])
    for image_id in ("S1", "S2", "X", "T2", "D1", "D2"):
        write_placeholder(root / "images", image_id)
    data = SplitData.from_fashion_iq(str(root), "val")
    assert "shirt/X" in data.index and "toptee/X" in data.index
    groups = data.cir_groups("split", "each")
    assert [data.ids[k] for k in groups["shirt"][0]] == ["shirt/S1", "shirt/S2", "shirt/X"]
    assert groups["shirt"][2] == ["is red", "is long"] and groups["shirt"][3] == [2, 2]
    assert [data.ids[k] for k in data.cir_groups("references-and-targets")["shirt"][0]] == ["shirt/S1", "shirt/X"]
    table = ResultTable()
    evaluate_random(data, EvalConfig(tasks=("cir",), cir_gallery="references-and-targets"), table, EvalArtifacts())
    assert all("VAL protocol" in r.protocol for r in table.rows)
