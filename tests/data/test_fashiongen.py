"""FashionGen: the original h5 layout (written with h5py) and the official code's jsonl layout."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.fashiongen import (
    FashionGenH5Item,
    load_fashiongen,
    load_fashiongen_h5,
    load_fashiongen_jsonl,
)
from unifashion.data.records import ItemDataset

DESCRIPTIONS = [
    b"Long sleeve cotton jersey t-shirt in black. Crewneck collar.",
    b"Slim-fit denim jeans in indigo. Five-pocket styling.",
    "Leather derby in caf\u00e9 brown.".encode("latin-1"),  # FashionGen has some Latin-1 text
]


def write_h5(path: Path, n: int = 3, drop: str | None = None) -> Path:
    images = np.zeros((n, 256, 256, 3), dtype=np.uint8)
    for i in range(n):
        images[i, :, :, i % 3] = 40 * (i + 1)
    columns = {
        "input_image": images,
        "input_description": np.array([[DESCRIPTIONS[i % 3]] for i in range(n)], dtype="S80"),
        "input_category": np.array([[b"TOPS"], [b"JEANS"], [b"SHOES"]][:n], dtype="S20"),
        "input_subcategory": np.array([[b"T-SHIRTS"], [b"JEANS"], [b"LACE UPS"]][:n], dtype="S20"),
        "input_name": np.array([[b"Black Tee"], [b"Indigo Jeans"], [b"Brown Derbys"]][:n], dtype="S20"),
        "input_pose": np.array([[b"id_gridfs_1"], [b"id_gridfs_2"], [b"id_gridfs_1"]][:n], dtype="S20"),
        "input_productID": np.array([[101], [101], [202]][:n], dtype=np.int32),
    }
    with h5py.File(path, "w") as f:
        for key, value in columns.items():
            if key != drop:
                f.create_dataset(key, data=value)
    return path


# ----------------------------------------------------------------------------- h5


def test_h5_records_read_text_now_and_images_lazily(tmp_path: Path):
    path = write_h5(tmp_path / "fashiongen_256_256_validation.h5")
    items = load_fashiongen_h5(path)
    assert [i.item_id for i in items] == ["101_0", "101_1", "202_2"]
    first = items[0]
    assert isinstance(first, FashionGenH5Item)
    assert first.captions == {"professional": DESCRIPTIONS[0].decode()}
    assert first.category == "TOPS" and first.source == "fashiongen"
    assert first.attributes == {
        "category": "TOPS", "row": 0, "product_id": "101", "name": "Black Tee",
        "subcategory": "T-SHIRTS", "pose": "id_gridfs_1",
    }
    assert items[2].captions["professional"] == "Leather derby in caf\u00e9 brown."
    image = items[1].load_image()
    assert image.size == (256, 256)
    assert np.asarray(image)[5, 5].tolist() == [0, 80, 0]
    assert items[1].image.shape == (256, 256, 3)
    with pytest.raises(AttributeError):
        items[1].image = np.zeros((2, 2, 3), np.uint8)

    sample = ItemDataset(items, caption_style="professional")[2]
    assert sample["caption"] == "Leather derby in caf\u00e9 brown." and sample["image"].size == (256, 256)


def test_h5_items_pickle_without_the_file_handle(tmp_path: Path):
    items = load_fashiongen_h5(write_h5(tmp_path / "train.h5"))
    items[0].load_image()  # opens the file in this process
    restored = pickle.loads(pickle.dumps(items))
    assert np.array_equal(restored[2].image, items[2].image)
    assert restored[2] == items[2] and restored[0] != items[2]


def test_h5_limit_and_dispatch(tmp_path: Path):
    path = write_h5(tmp_path / "train.h5")
    assert len(load_fashiongen_h5(path, limit=2)) == 2
    assert len(load_fashiongen(path)) == 3


def test_h5_missing_dataset_key_is_named(tmp_path: Path):
    path = write_h5(tmp_path / "no_text.h5", drop="input_description")
    with pytest.raises(DatasetFormatError) as info:
        load_fashiongen_h5(path)
    assert str(path) in str(info.value) and "missing dataset 'input_description'" in str(info.value)


def test_h5_wrong_column_length_is_named(tmp_path: Path):
    path = write_h5(tmp_path / "short_column.h5", drop="input_category")
    with h5py.File(path, "a") as f:
        f.create_dataset("input_category", data=np.array([[b"TOPS"]], dtype="S8"))
    with pytest.raises(DatasetFormatError, match="'input_category' has shape"):
        load_fashiongen_h5(path)


def test_h5_not_hdf5_or_missing(tmp_path: Path):
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(DatasetFormatError) as info:
        load_fashiongen_h5(fake)
    assert str(fake) in str(info.value) and "HDF5" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="missing.h5"):
        load_fashiongen_h5(tmp_path / "missing.h5")


# ----------------------------------------------------------------------------- jsonl


def write_jpg(path: Path, colour=(200, 30, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), colour).save(path)


def write_jsonl(path: Path, entries: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return path


def test_official_index_layout(tmp_path: Path):
    # As in the official UniFashion code: "index" is a JSON-encoded image name (or list of names).
    path = write_jsonl(tmp_path / "annotation_val.jsonl", [
        {"index": json.dumps("70001"), "description": "Cotton shirt in white.", "category": "SHIRTS"},
        {"index": json.dumps(["70002", "70003"]), "description": "Wool coat in camel."},
        "",
    ])
    for name in ("70001", "70002", "70003"):
        write_jpg(tmp_path / "image_val" / f"{name}.jpg")
    items = load_fashiongen_jsonl(path, image_dir=tmp_path / "image_val")
    assert [i.item_id for i in items] == ["70001", "70002", "70003"]
    assert items[0].captions == {"professional": "Cotton shirt in white."}
    assert items[0].category == "SHIRTS" and items[0].attributes == {"category": "SHIRTS"}
    assert items[1].attributes["product_images"] == ["70002", "70003"]
    assert items[2].captions["professional"] == "Wool coat in camel."
    assert items[2].image == tmp_path / "image_val" / "70003.jpg"
    assert items[2].load_image().size == (24, 24)


def test_generic_image_caption_layout(tmp_path: Path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"image": "imgs/a.jpg", "caption": "Leather boots in black."},
        {"image_path": "imgs/b.jpg", "description": "Silk scarf in red.", "subcategory": "SCARVES"},
    ])
    write_jpg(tmp_path / "imgs" / "a.jpg")
    items = load_fashiongen(path)  # image paths resolve against the jsonl's folder by default
    assert [i.item_id for i in items] == ["imgs/a.jpg", "imgs/b.jpg"]
    assert items[0].image == tmp_path / "imgs" / "a.jpg" and items[0].load_image().size == (24, 24)
    assert items[1].attributes == {"subcategory": "SCARVES"}
    assert items[1].caption("professional") == "Silk scarf in red."


def test_jsonl_bad_line_is_named(tmp_path: Path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"image": "a.jpg", "caption": "ok"}, '{"image": "b.jpg", '])
    with pytest.raises(DatasetFormatError) as info:
        load_fashiongen_jsonl(path)
    assert str(path) in str(info.value) and "line 2: not valid JSON" in str(info.value)


def test_jsonl_missing_fields_and_duplicates(tmp_path: Path):
    no_caption = write_jsonl(tmp_path / "no_caption.jsonl", [{"image": "a.jpg", "title": "x"}])
    with pytest.raises(DatasetFormatError, match="line 1: no caption string"):
        load_fashiongen_jsonl(no_caption)
    no_image = write_jsonl(tmp_path / "no_image.jsonl", [{"caption": "Shirt."}])
    with pytest.raises(DatasetFormatError, match="line 1: no image field"):
        load_fashiongen_jsonl(no_image)
    twice = write_jsonl(tmp_path / "twice.jsonl", [{"index": "5", "description": "a"}] * 2)
    with pytest.raises(DatasetFormatError, match="line 2: image '5' already listed on line 1"):
        load_fashiongen_jsonl(twice)
    with pytest.raises(DatasetNotFoundError, match="missing.jsonl"):
        load_fashiongen_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="cannot tell"):
        load_fashiongen(tmp_path / "annotations.csv")
