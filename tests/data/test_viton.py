"""VITON-HD / MGD: a fixture root in exactly that layout, paired and unpaired, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import load_image
from unifashion.data.viton import check_tryon_files, load_viton, read_pairs

PEOPLE = ("03191_00", "12419_00")


def write_image(path: Path, mode: str = "RGB", size=(12, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)


def write_root(root: Path, split: str = "test", sketches: bool = True, masked: bool = True) -> Path:
    # As VITON-HD's test_pairs.txt: each person with another person's garment (the unpaired setting).
    (root / f"{split}_pairs.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / f"{split}_pairs.txt").write_text("03191_00.jpg 12419_00.jpg\n12419_00.jpg 03191_00.jpg\n")
    base = root / split
    for stem in PEOPLE:
        write_image(base / "image" / f"{stem}.jpg")
        write_image(base / "cloth" / f"{stem}.jpg")
        write_image(base / "agnostic-mask" / f"{stem}_mask.png", mode="L")
        if masked:
            write_image(base / "agnostic-v3.2" / f"{stem}.jpg")
        if sketches:
            write_image(base / "im_sketch" / f"{stem}.png", mode="L")
    if sketches:
        write_image(base / "im_sketch_unpaired" / "03191_00_12419_00.png", mode="L")
        write_image(base / "im_sketch_unpaired" / "12419_00_03191_00.png", mode="L")
    # MGD keys captions by the product number before "_"; a full-stem key is read too.
    captions = {"03191": ["white petite t-shirt", "white detail tee"], "12419_00": "black lace cami"}
    (root / "captions.json").write_text(json.dumps(captions))
    return root


def test_paired_setting_uses_the_persons_own_garment(tmp_path: Path):
    root = write_root(tmp_path)
    records = load_viton(root, "test", "paired")
    assert [r.sample_id for r in records] == list(PEOPLE)
    first = records[0]
    assert first.person == root / "test" / "image" / "03191_00.jpg"
    assert first.garment == root / "test" / "cloth" / "03191_00.jpg"
    assert first.garment_id == "03191_00"
    assert first.agnostic_mask == root / "test" / "agnostic-mask" / "03191_00_mask.png"
    assert first.masked_person == root / "test" / "agnostic-v3.2" / "03191_00.jpg"
    assert first.sketch == root / "test" / "im_sketch" / "03191_00.png"
    assert first.text == "white petite t-shirt, white detail tee"
    assert records[1].text == "black lace cami"
    check_tryon_files(records)  # every file is there


def test_unpaired_setting_uses_the_pairs_file_garment(tmp_path: Path):
    root = write_root(tmp_path)
    records = load_viton(root, "test", "unpaired")
    first = records[0]
    assert first.sample_id == "03191_00_12419_00"
    assert first.garment == root / "test" / "cloth" / "12419_00.jpg" and first.garment_id == "12419_00"
    assert first.sketch == root / "test" / "im_sketch_unpaired" / "03191_00_12419_00.png"
    assert first.agnostic_mask == root / "test" / "agnostic-mask" / "03191_00_mask.png"
    assert first.text == "black lace cami"  # the text describes the garment to put on
    check_tryon_files(records)
    assert load_image(first.agnostic_mask, "L").size == (12, 16)


def test_optional_parts_absent(tmp_path: Path):
    root = write_root(tmp_path, sketches=False, masked=False)
    (root / "captions.json").unlink()
    records = load_viton(root, "test", "unpaired")
    assert all(r.sketch is None and r.masked_person is None and r.text == "" for r in records)
    with pytest.raises(DatasetNotFoundError, match="other_captions.json"):
        load_viton(root, "test", captions_file="other_captions.json")


def test_bad_line_in_pairs_file_is_named(tmp_path: Path):
    root = write_root(tmp_path)
    pairs = root / "test_pairs.txt"
    pairs.write_text("03191_00.jpg 12419_00.jpg\n03191_00.jpg\n")
    with pytest.raises(DatasetFormatError) as info:
        load_viton(root, "test")
    message = str(info.value)
    assert str(pairs) in message and "line 2: expected 'person_image cloth_image', got 1 field(s)" in message


def test_missing_files_and_folders_are_named(tmp_path: Path):
    root = write_root(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="train"):
        load_viton(root, "train")
    (root / "test_pairs.txt").rename(root / "pairs.txt")
    with pytest.raises(DatasetNotFoundError) as info:
        read_pairs(root / "test_pairs.txt")
    assert "test_pairs.txt" in str(info.value)

    other = write_root(tmp_path / "other")
    for mask in (other / "test" / "agnostic-mask").iterdir():
        mask.unlink()
    (other / "test" / "agnostic-mask").rmdir()
    with pytest.raises(DatasetNotFoundError, match="agnostic-mask"):
        load_viton(other, "test")


def test_check_tryon_files_names_the_missing_file(tmp_path: Path):
    root = write_root(tmp_path)
    records = load_viton(root, "test", "unpaired")
    (root / "test" / "im_sketch_unpaired" / "12419_00_03191_00.png").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        check_tryon_files(records)
    assert "12419_00_03191_00.png" in str(info.value) and "1 of 10 try-on files missing" in str(info.value)


def test_malformed_captions_file_is_named(tmp_path: Path):
    root = write_root(tmp_path)
    (root / "captions.json").write_text('{"03191": ["white tee"')
    with pytest.raises(DatasetFormatError) as info:
        load_viton(root, "test")
    assert "captions.json" in str(info.value) and "not valid JSON" in str(info.value)
    (root / "captions.json").write_text('{"03191": 5}')
    with pytest.raises(DatasetFormatError, match="caption of '03191' must be a string or a list of strings"):
        load_viton(root, "test")
