"""Worn views: the masks and sketches derived as VITON-HD / MGD derive them, the layout the loader reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from unifashion.data.records import load_image
from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
from unifashion.data.synthetic.worn import (
    AGNOSTIC_GREY,
    build_worn_dataset,
    edge_map,
    person_seed,
    read_garment_attributes,
    render_worn,
    unpaired_partners,
)
from unifashion.data.viton import check_tryon_files, load_viton


def as_bool(image) -> np.ndarray:
    return np.asarray(image) > 127


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue(CatalogueConfig(n_items=60, seed=3))


@pytest.fixture(scope="module")
def views(catalogue):
    # Every category, several people each.
    return [(it, render_worn(it.attributes, it.seed, person_seed(0, it.item_id))) for it in catalogue.items[:30]]


def test_mask_covers_the_garment_and_nothing_of_the_head(views):
    categories = set()
    for item, view in views:
        garment, agnostic, head = as_bool(view.garment_mask), as_bool(view.agnostic_mask), as_bool(view.head_mask)
        assert garment.sum() > 40, item.item_id  # the garment is visible
        assert head.sum() > 20, item.item_id
        assert not (garment & ~agnostic).any(), f"{item.item_id}: garment pixels outside the agnostic mask"
        assert not (agnostic & head).any(), f"{item.item_id}: the agnostic mask touches the head"
        # Dilated as VITON-HD does: the mask reaches beyond the garment.
        assert agnostic.sum() > garment.sum()
        categories.add(item.attributes["category"])
    assert categories == {"dress", "shirt", "toptee", "skirt", "pants"}


def test_masked_person_is_grey_exactly_inside_the_mask(views):
    for _, view in views[:6]:
        agnostic = as_bool(view.agnostic_mask)
        masked, person = np.asarray(view.masked_person), np.asarray(view.person)
        assert (masked[agnostic] == AGNOSTIC_GREY).all()
        assert (masked[~agnostic] == person[~agnostic]).all()


def test_sketch_lines_lie_on_the_garment_and_trace_its_boundary(views):
    for item, view in views:
        sketch, garment = as_bool(view.sketch), as_bool(view.garment_mask)
        assert sketch.any()
        assert not (sketch & ~garment).any(), f"{item.item_id}: sketch line off the garment"
        boundary = garment & ~ndimage.binary_erosion(garment, structure=ndimage.generate_binary_structure(2, 1))
        assert (sketch[boundary]).all(), f"{item.item_id}: the silhouette is not all in the sketch"


def test_sketch_ignores_the_pattern(catalogue):
    striped = next(it for it in catalogue.items if it.attributes["pattern"] == "stripes")
    solid = {k: v for k, v in striped.attributes.items() if k != "pattern_colour"} | {"pattern": "solid"}
    seed = person_seed(0, striped.item_id)
    a = render_worn(striped.attributes, striped.seed, seed)
    b = render_worn(solid, striped.seed, seed)
    assert np.array_equal(np.asarray(a.sketch), np.asarray(b.sketch))
    assert not np.array_equal(np.asarray(a.person), np.asarray(b.person))


def test_render_is_deterministic_and_people_vary(catalogue):
    item = catalogue.items[0]
    one = render_worn(item.attributes, item.seed, 11)
    two = render_worn(item.attributes, item.seed, 11)
    other = render_worn(item.attributes, item.seed, 12)
    assert one.person.tobytes() == two.person.tobytes()
    assert one.person.tobytes() != other.person.tobytes()
    with pytest.raises(ValueError, match="at least 32 pixels"):
        render_worn(item.attributes, item.seed, 1, size=16)


def test_edge_map_on_a_step():
    step = np.zeros((8, 8))
    step[:, 4:] = 1.0
    edges = edge_map(step)
    assert edges[:, 3:5].all() and not edges[:, :3].any() and not edges[:, 5:].any()


def test_unpaired_partners_stay_in_category_and_move(catalogue):
    test = catalogue.items[:30]
    partners = unpaired_partners(test, seed=0)
    by_id = {it.item_id: it for it in test}
    for item_id, partner in partners.items():
        assert by_id[partner].attributes["category"] == by_id[item_id].attributes["category"]
        assert partner != item_id


def test_dataset_in_viton_layout_reads_with_the_viton_loader(tmp_path: Path, catalogue):
    counts = build_worn_dataset(catalogue, tmp_path, limit=4, progress=False)
    assert counts == {"train": 4, "test": 4}
    for setting in ("paired", "unpaired"):
        records = load_viton(tmp_path, "test", setting)
        assert len(records) == 4
        check_tryon_files(records)  # every file the layout names is there
        assert all(r.text and r.sketch is not None and r.masked_person is not None for r in records)
    paired = load_viton(tmp_path, "test", "paired")
    unpaired = load_viton(tmp_path, "test", "unpaired")
    assert all(r.garment_id == r.sample_id for r in paired)
    attributes = read_garment_attributes(tmp_path)
    categories = [attributes[r.garment_id]["category"] for r in paired]
    for p, u, category in zip(paired, unpaired, categories, strict=True):
        assert attributes[u.garment_id]["category"] == category
        # Another garment of the same category, unless the person's is the only one of its kind.
        assert (u.garment_id != p.garment_id) == (categories.count(category) > 1)
    assert load_image(paired[0].agnostic_mask, "L").size == (64, 64)
    train = load_viton(tmp_path, "train", "paired")
    check_tryon_files(train)
    assert set(attributes) == {r.garment_id for r in paired + train}
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert paired[0].text == captions[paired[0].garment_id][0]
    # Deterministic: a second build writes the same bytes.
    again = tmp_path / "again"
    build_worn_dataset(catalogue, again, limit=4, progress=False)
    first = (tmp_path / "test" / "image" / Path(paired[0].person).name).read_bytes()
    assert first == (again / "test" / "image" / Path(paired[0].person).name).read_bytes()


def test_build_worn_command(tmp_path: Path, capsys):
    from unifashion.cli import main

    assert main(["data", "build-worn", "--out", str(tmp_path), "--n-items", "60", "--limit", "2"]) == 0
    assert "{'train': 2, 'test': 2}" in capsys.readouterr().out
    assert len(load_viton(tmp_path, "test", "unpaired")) == 2
    assert main(["data", "build-worn", "--out", str(tmp_path / "x"), "--catalogue", str(tmp_path / "none")]) == 2
    assert "catalogue.json" in capsys.readouterr().err
