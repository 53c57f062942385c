"""Fashion200K (Han et al., ICCV 2017): product photos with short attribute-style titles.

Layout of a Fashion200K root::

    {root}/labels/{category}_{split}_detect_all.txt
    {root}/women/dresses/.../51727804_0.jpeg          (the image paths the label files name)

Each label line is ``image_path<TAB>detection_score<TAB>description``, e.g.
``women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg	0.92	black crepe cami dress``.
The category is taken from the label file's name (dress, jacket, pants, skirt, top), the product
id from the image's parent folder. Descriptions are product titles, so they map to the "short"
caption style. Records carry image paths; nothing is opened at load time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import ItemRecord

FASHION200K_CATEGORIES = ("dress", "jacket", "pants", "skirt", "top")
SOURCE = "fashion200k"


def label_file(root: str | Path, category: str, split: str) -> Path:
    return Path(root) / "labels" / f"{category}_{split}_detect_all.txt"


def read_fashion200k_labels(path: str | Path, category: str, root: str | Path) -> list[ItemRecord]:
    """Parse one label file into item records whose images lie under ``root``.

    A line without exactly three tab-separated fields, a score that is not a number, an empty
    image path or an image path listed twice raises :class:`DatasetFormatError` naming the file
    and the line number. Blank lines are skipped; an empty description gives an item with no
    captions (kept, so that no image is dropped from a gallery).
    """
    path = Path(path)
    root = Path(root)
    if not path.is_file():
        raise DatasetNotFoundError(path, "Fashion200K label file missing")
    items: list[ItemRecord] = []
    first_line_of: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DatasetFormatError(
                    path,
                    f"line {line_number}: expected 'image_path<TAB>detection_score<TAB>description', "
                    f"got {len(fields)} field(s): {line[:120]!r}",
                )
            image_path, score_text, description = (field.strip() for field in fields)
            if not image_path:
                raise DatasetFormatError(path, f"line {line_number}: empty image path")
            try:
                score = float(score_text)
            except ValueError:
                raise DatasetFormatError(
                    path, f"line {line_number}: detection score {score_text!r} is not a number"
                ) from None
            if image_path in first_line_of:
                raise DatasetFormatError(
                    path,
                    f"line {line_number}: image {image_path!r} already listed on line "
                    f"{first_line_of[image_path]}",
                )
            first_line_of[image_path] = line_number
            items.append(
                ItemRecord(
                    item_id=image_path,
                    image=root / image_path,
                    category=category,
                    captions={"short": description} if description else {},
                    attributes={
                        "category": category,
                        "product_id": Path(image_path).parent.name,
                        "detection_score": score,
                    },
                    source=SOURCE,
                )
            )
    return items


def load_fashion200k(
    root: str | Path,
    split: str = "train",
    categories: Sequence[str] | str | None = None,
) -> list[ItemRecord]:
    """All items of ``split`` for ``categories``, category by category in the order asked.

    ``categories=None`` reads every ``labels/*_{split}_detect_all.txt`` present (the five
    standard ones, or whatever subset you have); it is an error if there are none. A category
    asked for by name must have its file.
    """
    root = Path(root)
    labels_dir = root / "labels"
    if not labels_dir.is_dir():
        raise DatasetNotFoundError(labels_dir, "Fashion200K labels folder missing")
    if categories is None:
        suffix = f"_{split}_detect_all.txt"
        found = sorted(p.name[: -len(suffix)] for p in labels_dir.glob(f"*{suffix}"))
        if not found:
            raise DatasetNotFoundError(labels_dir / f"*{suffix}", f"no Fashion200K label files for split {split!r}")
        categories = found
    elif isinstance(categories, str):
        categories = (categories,)
    items: list[ItemRecord] = []
    for category in categories:
        items.extend(read_fashion200k_labels(label_file(root, category, split), category, root))
    return items
