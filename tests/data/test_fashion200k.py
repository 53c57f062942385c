"""Fashion200K: label files written in the dataset's tab-separated format, images under the root."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.fashion200k import load_fashion200k, read_fashion200k_labels

DRESS_LINES = [
    "women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg\t0.92\tblack crepe cami dress",
    "women/dresses/cocktail_dresses/53924214/53924214_1.jpeg\t0.874\tred lace midi dress",
]
TOP_LINES = ["women/tops/blouses/60012345/60012345_0.jpeg\t0.5\twhite silk blouse"]


def write_root(root: Path, split: str = "train") -> Path:
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / f"dress_{split}_detect_all.txt").write_text("\n".join(DRESS_LINES) + "\n\n")
    (root / "labels" / f"top_{split}_detect_all.txt").write_text("\r\n".join(TOP_LINES) + "\r\n")
    for line in DRESS_LINES + TOP_LINES:
        image_path = root / line.split("\t")[0]
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 30), (10, 20, 30)).save(image_path, format="JPEG")
    return root


def test_loads_items_with_short_captions(tmp_path: Path):
    root = write_root(tmp_path)
    items = load_fashion200k(root, "train")
    assert [i.category for i in items] == ["dress", "dress", "top"]  # categories from the file names
    first = items[0]
    assert first.item_id == "women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg"
    assert first.image == root / first.item_id
    assert first.captions == {"short": "black crepe cami dress"}
    assert first.attributes == {"category": "dress", "product_id": "51727804", "detection_score": 0.92}
    assert first.source == "fashion200k"
    assert items[2].captions["short"] == "white silk blouse"  # CRLF line ends stripped
    assert items[1].load_image().size == (20, 30)


def test_category_selection(tmp_path: Path):
    root = write_root(tmp_path)
    assert len(load_fashion200k(root, "train", categories="top")) == 1
    assert len(load_fashion200k(root, "train", categories=["top", "dress"])) == 3
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion200k(root, "train", categories=["skirt"])
    assert "skirt_train_detect_all.txt" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="test_detect_all"):
        load_fashion200k(root, "test")
    with pytest.raises(DatasetNotFoundError, match="labels"):
        load_fashion200k(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("women/dresses/x/1/1_0.jpeg 0.9 dress with spaces not tabs", "line 2: expected 'image_path<TAB>"),
        ("women/dresses/x/1/1_0.jpeg\tnot-a-score\tdress", "line 2: detection score 'not-a-score' is not a number"),
        (DRESS_LINES[0], "line 2: image 'women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg' already"),
    ],
)
def test_bad_label_line_is_named(tmp_path: Path, bad_line: str, problem: str):
    path = tmp_path / "dress_train_detect_all.txt"
    path.write_text(DRESS_LINES[0] + "\n" + bad_line + "\n")
    with pytest.raises(DatasetFormatError) as info:
        read_fashion200k_labels(path, "dress", tmp_path)
    assert str(path) in str(info.value) and problem in str(info.value)
