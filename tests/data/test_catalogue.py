"""The embedded catalogue: determinism, attributes visible in pixels, triplet validity, file I/O."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.synthetic.attributes import CATEGORIES, COLOURS, PATTERNS, shade, validate_attributes
from unifashion.data.synthetic.captions import captions_for
from unifashion.data.synthetic.catalogue import (
    CatalogueConfig,
    build_catalogue_files,
    load_catalogue,
    make_catalogue,
)
from unifashion.data.synthetic.render import fill_pattern, render_garment
from unifashion.data.synthetic.triplets import changed_attributes, relative_captions, sample_edit

BASE = {"category": "dress", "colour": "red", "lightness": "medium", "pattern": "solid", "sleeve": "short",
        "length": "knee", "fit": "tight", "neckline": "round"}


def _tree_digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _inside(attrs, seed=0):
    r = render_garment(attrs, 128, seed)
    pixels = np.asarray(r.image, dtype=np.float64)
    mask = np.asarray(r.mask) > 0
    return pixels, mask


def test_build_twice_gives_identical_bytes(tmp_path):
    config = CatalogueConfig(n_items=60, seed=3)
    build_catalogue_files(tmp_path / "a", config, progress=False)
    build_catalogue_files(tmp_path / "b", config, workers=2, progress=False)
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert len(a) == 60 + 3
    assert a == b


def test_different_seed_gives_different_catalogue():
    a = make_catalogue(CatalogueConfig(n_items=30, seed=0))
    b = make_catalogue(CatalogueConfig(n_items=30, seed=1))
    assert [i.attributes for i in a.items] != [i.attributes for i in b.items]


def test_render_is_deterministic_and_sized():
    one = render_garment(BASE, 96, seed=5)
    two = render_garment(BASE, 96, seed=5)
    assert one.image.size == (96, 96)
    assert one.image.tobytes() == two.image.tobytes()
    assert one.mask.tobytes() == two.mask.tobytes()


@pytest.mark.parametrize("colour", ["blue", "green", "yellow", "purple"])
def test_colour_change_moves_mean_colour_inside_mask(colour):
    px_red, m_red = _inside(BASE)
    px_new, m_new = _inside({**BASE, "colour": colour})
    mean_red = px_red[m_red].mean(axis=0)
    mean_new = px_new[m_new].mean(axis=0)
    # The garment's mean colour is near its named RGB and far from the other colour.
    assert np.linalg.norm(mean_red - COLOURS["red"]) < 40
    assert np.linalg.norm(mean_new - COLOURS[colour]) < 40
    assert np.linalg.norm(mean_new - mean_red) > 60


def test_lightness_orders_brightness():
    means = [_inside({**BASE, "colour": "blue", "lightness": lv})[0][_inside(BASE)[1]].mean()
             for lv in ("light", "medium", "dark")]
    assert means[0] > means[1] + 20 > means[2] + 40


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "solid"])
def test_pattern_adds_pattern_colour_inside_garment(pattern):
    attrs = {**BASE, "colour": "navy", "pattern": pattern, "pattern_colour": "yellow"}
    px, mask = _inside(attrs)
    solid_px, solid_mask = _inside({**BASE, "colour": "navy"})
    yellowish = (px[..., 0] > 150) & (px[..., 1] > 130) & (px[..., 2] < 110)
    assert yellowish[mask].mean() > 0.01, pattern
    solid_yellow = (solid_px[..., 0] > 150) & (solid_px[..., 1] > 130) & (solid_px[..., 2] < 110)
    assert solid_yellow[solid_mask].mean() == 0


def test_patterns_differ_from_each_other():
    swatches = {p: np.asarray(fill_pattern(64, 64, p, (20, 20, 80), (240, 200, 40), seed=1), dtype=float)
                for p in PATTERNS}
    for p in PATTERNS:
        for q in PATTERNS:
            if p < q:
                assert np.abs(swatches[p] - swatches[q]).mean() > 3, (p, q)


@pytest.mark.parametrize("name,values", [("sleeve", ["sleeveless", "short", "long"]),
                                         ("length", ["mini", "knee", "maxi"]), ("fit", ["tight", "loose"])])
def test_shape_attributes_grow_the_mask(name, values):
    # Longer sleeves, longer garments and looser fits each cover more pixels; seed fixed so framing is equal.
    areas = [_inside({**BASE, name: v}, seed=7)[1].sum() for v in values]
    assert areas == sorted(areas) and areas[0] < areas[-1] * 0.97


def test_neckline_changes_pixels_near_the_neck():
    images = {n: _inside({**BASE, "neckline": n}, seed=2)[0] for n in ("round", "v-neck", "square", "collar")}
    for a in images:
        for b in images:
            if a < b:
                assert np.abs(images[a][:48] - images[b][:48]).mean() > 0.5, (a, b)


def test_each_category_renders_and_shirt_has_buttons():
    for cat, spec in CATEGORIES.items():
        attrs = {"category": cat, "colour": "green", "lightness": "medium", "pattern": "solid",
                 "length": spec["lengths"][1], "fit": "tight"}
        if spec["sleeves"]:
            attrs["sleeve"] = "short"
        if spec["neckline"]:
            attrs["neckline"] = "round"
        px, mask = _inside(attrs)
        assert mask.mean() > 0.05, cat
    shirt = _inside({**BASE, "category": "shirt", "length": "regular"})[0]
    toptee = _inside({**BASE, "category": "toptee", "length": "regular"})[0]
    assert np.abs(shirt - toptee).mean() > 0.15


def test_invalid_attributes_are_named():
    with pytest.raises(ValueError, match="colour='magenta'"):
        render_garment({**BASE, "colour": "magenta"})
    with pytest.raises(ValueError, match="pattern_colour"):
        render_garment({**BASE, "pattern": "dots"})
    with pytest.raises(ValueError, match="unknown category"):
        validate_attributes({**BASE, "category": "hat"})


def test_captions_state_every_attribute():
    attrs = {**BASE, "colour": "blue", "lightness": "dark", "pattern": "stripes", "pattern_colour": "white",
             "sleeve": "long", "neckline": "v-neck", "fit": "loose", "length": "maxi"}
    caps = captions_for(attrs, seed=4)
    assert set(caps) == {"short", "professional", "detailed"}
    assert caps["short"] == "dark blue striped long sleeve maxi loose dress"
    for text in caps.values():
        assert "dark blue" in text and "dress" in text
    assert "white stripes" in caps["detailed"] and "v-neck" in caps["detailed"]
    assert "Stripes in white" in caps["professional"] and "Relaxed fit." in caps["professional"]


# Words that show a relative caption speaks of an attribute.
MENTIONS = {
    "colour": [*COLOURS, "color"],
    "lightness": ["darker", "lighter", "light ", "dark "],
    "pattern": ["solid", "pattern", "plain", "print", "stripe", "dot", "floral", "flower", "plaid", "check",
                "logo", "text", "writing", "graphic"],
    "sleeve": ["sleeve"],
    "length": ["longer", "shorter", "mini", "maxi", "knee", "floor", "cropped", "regular length", "longline",
               "longer cut", "shorts", "full length", "long pants"],
    "fit": ["tight", "fitted", "fitting", "slimmer", "loose", "baggier", "relaxed", "oversized"],
    "neckline": ["neck", "collar"],
}


def test_triplets_change_exactly_what_they_say():
    catalogue = make_catalogue(CatalogueConfig(n_items=600, seed=11))
    assert min(len(t.changed_attributes) for t in catalogue.triplets) >= 1
    for t in catalogue.triplets:
        ref = catalogue.item(t.reference_id).attributes
        tgt = catalogue.item(t.target_id).attributes
        changed = changed_attributes(ref, tgt)
        assert changed == t.changed_attributes
        semantic = {k for k in changed if k != "pattern_colour"} or {"pattern"}
        assert 1 <= len(semantic) <= 4  # 1-3 edits; a colour edit may also move lightness
        text = " ".join(t.relative_captions).lower()
        for name in semantic:
            if name == "lightness" and "colour" in semantic:
                continue  # the colour phrase names the shade, e.g. "light pink"
            assert any(w in text for w in MENTIONS[name]), (name, t.relative_captions, changed)
        # Attributes that did not change are not mentioned (sleeves, fit and necklines are unambiguous words).
        for name in ("sleeve", "neckline"):
            if name not in semantic:
                assert not any(w in text for w in MENTIONS[name]), (name, t.relative_captions)


def test_relative_captions_vary_in_wording():
    rng = np.random.default_rng(0)
    texts = set()
    for _ in range(40):
        tgt, names = sample_edit(BASE, rng)
        texts.update(relative_captions(BASE, tgt, rng))
    assert len(texts) > 30
    sleeve_texts = {relative_captions(BASE, {**BASE, "sleeve": "long"}, np.random.default_rng(s))[0]
                    for s in range(30)}
    assert len(sleeve_texts) >= 3  # several phrasings of one edit
    assert any(re.search(r"longer sleeves", t) for t in sleeve_texts)


def test_splits_share_no_item_or_group():
    catalogue = make_catalogue(CatalogueConfig(n_items=900, seed=2))
    groups: dict[int, set[str]] = {}
    for item in catalogue.items:
        groups.setdefault(item.group, set()).add(item.split)
    assert all(len(s) == 1 for s in groups.values())
    splits = {it.item_id: it.split for it in catalogue.items}
    for t in catalogue.triplets:
        assert splits[t.reference_id] == splits[t.target_id]
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts["train"] > 0.7 * 900 and counts["val"] > 40 and counts["test"] > 40


def test_records_and_files_round_trip(tmp_path):
    built = build_catalogue_files(tmp_path, CatalogueConfig(n_items=30, seed=1), progress=False)
    loaded = load_catalogue(tmp_path)
    assert [i.attributes for i in loaded.items] == [i.attributes for i in built.items]
    assert [t.relative_captions for t in loaded.triplets] == [t.relative_captions for t in built.triplets]
    records = loaded.item_records("train")
    assert records and all(r.captions.keys() == {"short", "professional", "detailed"} for r in records)
    img = records[0].load_image()
    assert img.size == (128, 128)
    assert img.tobytes() == loaded.render(records[0].item_id).tobytes()
    meta = json.loads((tmp_path / "catalogue.json").read_text())
    assert sum(meta["items"].values()) == 30


def test_load_errors_name_file_and_problem(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="catalogue.json"):
        load_catalogue(tmp_path)
    build_catalogue_files(tmp_path, CatalogueConfig(n_items=6), progress=False)
    lines = (tmp_path / "items.jsonl").read_text().splitlines()
    (tmp_path / "items.jsonl").write_text("\n".join([lines[0], "{not json"]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"items.jsonl.*line 2 is not valid JSON"):
        load_catalogue(tmp_path)
    (tmp_path / "items.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(DatasetFormatError, match=r"triplets.jsonl.*not in items.jsonl"):
        load_catalogue(tmp_path)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown config key 'catalogue.n_itmes'"):
        CatalogueConfig.from_dict({"n_itmes": 5})


def test_shade_blends_toward_white_and_black():
    assert shade("black", "light") == COLOURS["black"]
    r, g, b = shade("blue", "light")
    assert all(c2 > c1 for c1, c2 in zip(COLOURS["blue"], (r, g, b), strict=True))
