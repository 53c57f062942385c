"""Fashion-IQ (Wu et al., CVPR 2021): composed image retrieval triplets over product galleries.

Layout of a Fashion-IQ root, as the dataset authors publish it::

    {root}/captions/cap.{category}.{split}.json       [{"candidate": id, "target": id,
                                                        "captions": [text, text]}, ...]
    {root}/image_splits/split.{category}.{split}.json [id, id, ...]
    {root}/images/{id}.png                            (or .jpg; folder and suffix configurable)

Categories are ``dress``, ``shirt`` and ``toptee``; splits ``train`` and ``val`` (``test``
captions withhold the targets and are not evaluated by the standard protocol).

Protocol choices. Papers report Fashion-IQ under two protocols whose numbers differ by several
points, and join the two relative captions in two ways; both are options here, and
:func:`fashion_iq_protocol_name` names the choice for the results rows:

- gallery ``"split"`` (the original protocol; CLIP4Cir, SPRC, and the default here): the gallery
  of a category is exactly that split's image list (val: 3,817 dress, 6,346 shirt, 5,373 toptee
  images), one gallery per category (shirt and toptee share some ids, so they are kept apart);
- gallery ``"references-and-targets"`` (the VAL protocol, Chen et al. CVPR 2020, followed by
  CoSMo and others): the union of the split's reference and target images, without repeats
  (val: 2,628 / 3,089 / 2,902), a smaller gallery and so higher recall;
- captions ``"and"`` (default): one query per triplet, the two captions joined with " and "
  (:attr:`TripletRecord.modification_text`); ``"each"``: each caption is its own query (two per
  triplet, as VAL's evaluation files do).
- Every triplet is kept: reference = ``candidate``, target = ``target``.
- A triplet whose candidate or target is not in the split's image list breaks the protocol
  (its target could never be retrieved). By default this raises :class:`DatasetFormatError`
  naming the caption file and the ids; ``missing_ids="add"`` instead adds those ids to the
  gallery and records them in :attr:`FashionIQCategory.added_ids`. The real annotation files
  have no such ids.

Images are not opened at load time: records carry paths, and :meth:`FashionIQCategory.check_images`
(or :func:`check_images`) names the missing files when you want to know before a long run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import ItemRecord, TripletRecord

FASHION_IQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHION_IQ_SPLITS = ("train", "val", "test")
FASHION_IQ_GALLERIES = ("split", "references-and-targets")
FASHION_IQ_CAPTION_JOINS = ("and", "each")
SOURCE = "fashion-iq"


def fashion_iq_protocol_name(gallery: str = "split", caption_join: str = "and") -> str:
    """The protocol's name for a results row: which gallery, how the two captions are used."""
    _check_protocol(gallery, caption_join)
    galleries = {"split": "original protocol, gallery = the split's image list",
                 "references-and-targets": "VAL protocol, gallery = the split's references and targets"}
    joins = {"and": "the two captions joined with ' and '", "each": "each caption its own query"}
    return f"{galleries[gallery]}; {joins[caption_join]}"


def _check_protocol(gallery: str, caption_join: str) -> None:
    if gallery not in FASHION_IQ_GALLERIES:
        raise ValueError(f"unknown Fashion-IQ gallery {gallery!r}; expected one of {FASHION_IQ_GALLERIES}")
    if caption_join not in FASHION_IQ_CAPTION_JOINS:
        raise ValueError(f"unknown caption join {caption_join!r}; expected one of {FASHION_IQ_CAPTION_JOINS}")


def protocol_gallery_ids(image_ids: Sequence[str], triplets: Sequence[TripletRecord], gallery: str) -> list[str]:
    """The gallery of one category under ``gallery``: the split's image list, or the union of the
    triplets' references and targets (in the image list's order, then first use)."""
    _check_protocol(gallery, "and")
    if gallery == "split":
        return list(image_ids)
    used = {i for t in triplets for i in (t.reference_id, t.target_id)}
    ordered = [i for i in image_ids if i in used]
    listed = set(ordered)
    for t in triplets:
        for i in (t.reference_id, t.target_id):
            if i not in listed:
                listed.add(i)
                ordered.append(i)
    return ordered


def protocol_queries(triplets: Sequence[TripletRecord], caption_join: str = "and") -> list[tuple[str, str, str]]:
    """``(reference id, text, target id)`` per query: one per triplet with the captions joined by
    " and ", or one per non-empty caption (``"each"``)."""
    _check_protocol("split", caption_join)
    if caption_join == "and":
        return [(t.reference_id, t.modification_text, t.target_id) for t in triplets]
    return [(t.reference_id, c.strip(), t.target_id) for t in triplets for c in t.relative_captions if c.strip()]


@dataclass
class FashionIQCategory:
    """One category of one split: its gallery, its triplets, and ids added to the gallery."""

    category: str
    split: str
    gallery: list[ItemRecord]
    triplets: list[TripletRecord]
    added_ids: list[str] = field(default_factory=list)

    def check_images(self) -> None:
        """Raise :class:`DatasetNotFoundError` naming the gallery images that are missing."""
        check_images(self.gallery)


def caption_file(root: str | Path, category: str, split: str) -> Path:
    return Path(root) / "captions" / f"cap.{category}.{split}.json"


def split_file(root: str | Path, category: str, split: str) -> Path:
    return Path(root) / "image_splits" / f"split.{category}.{split}.json"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetNotFoundError(path, "Fashion-IQ annotation file missing")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, f"not valid JSON ({exc})") from exc


def _check_category_and_split(category: str, split: str) -> None:
    if category not in FASHION_IQ_CATEGORIES:
        raise ValueError(f"unknown Fashion-IQ category {category!r}; expected one of {FASHION_IQ_CATEGORIES}")
    if split not in FASHION_IQ_SPLITS:
        raise ValueError(f"unknown Fashion-IQ split {split!r}; expected one of {FASHION_IQ_SPLITS}")


def load_fashion_iq_image_ids(root: str | Path, category: str, split: str) -> list[str]:
    """The image ids of ``split.{category}.{split}.json``, in file order, validated."""
    _check_category_and_split(category, split)
    path = split_file(root, category, split)
    ids = _read_json(path)
    if not isinstance(ids, list):
        raise DatasetFormatError(path, f"expected a JSON list of image ids, got {type(ids).__name__}")
    seen: set[str] = set()
    for i, image_id in enumerate(ids):
        if not isinstance(image_id, str) or not image_id:
            raise DatasetFormatError(path, f"entry {i} is not an image id string: {image_id!r}")
        if image_id in seen:
            raise DatasetFormatError(path, f"image id {image_id!r} is listed twice (entry {i})")
        seen.add(image_id)
    return ids


def load_fashion_iq_triplets(root: str | Path, category: str, split: str) -> list[TripletRecord]:
    """The triplets of ``cap.{category}.{split}.json``, in file order, validated."""
    _check_category_and_split(category, split)
    path = caption_file(root, category, split)
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise DatasetFormatError(path, f"expected a JSON list of triplets, got {type(entries).__name__}")
    triplets = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetFormatError(path, f"entry {i} is not a JSON object: {entry!r}")
        for key in ("candidate", "target", "captions"):
            if key not in entry:
                raise DatasetFormatError(path, f"entry {i} has no {key!r} field (has {sorted(entry)})")
        captions = entry["captions"]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise DatasetFormatError(path, f"entry {i}: 'captions' must be a list of strings, got {captions!r}")
        for key in ("candidate", "target"):
            if not isinstance(entry[key], str) or not entry[key]:
                raise DatasetFormatError(path, f"entry {i}: {key!r} is not an image id string")
        triplets.append(
            TripletRecord(
                reference_id=entry["candidate"],
                target_id=entry["target"],
                relative_captions=list(captions),
                category=category,
            )
        )
    return triplets


def gallery_items(
    image_ids: Iterable[str],
    category: str,
    image_dir: str | Path,
    image_extension: str = "png",
) -> list[ItemRecord]:
    """Item records for ``image_ids``; each carries the path ``{image_dir}/{id}.{image_extension}``.

    Fashion-IQ has no per-image captions, so ``captions`` is empty.
    """
    suffix = "." + image_extension.lstrip(".")
    image_dir = Path(image_dir)
    return [
        ItemRecord(
            item_id=image_id,
            image=image_dir / f"{image_id}{suffix}",
            category=category,
            attributes={"category": category},
            source=SOURCE,
        )
        for image_id in image_ids
    ]


def load_fashion_iq(
    root: str | Path,
    split: str = "val",
    categories: Sequence[str] | str | None = None,
    image_dir: str | Path | None = None,
    image_extension: str = "png",
    missing_ids: Literal["raise", "add"] = "raise",
    gallery: str = "split",
) -> dict[str, FashionIQCategory]:
    """Load the galleries and triplets of ``split`` for ``categories`` (None: all three).

    ``image_dir`` defaults to ``{root}/images``. Returns one :class:`FashionIQCategory` per
    category, in the order asked. ``gallery``: ``"split"`` (original protocol) or
    ``"references-and-targets"`` (VAL protocol); see the module docstring.
    """
    _check_protocol(gallery, "and")
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(root, "Fashion-IQ root folder missing")
    if missing_ids not in ("raise", "add"):
        raise ValueError(f"missing_ids must be 'raise' or 'add', got {missing_ids!r}")
    if categories is None:
        categories = FASHION_IQ_CATEGORIES
    elif isinstance(categories, str):
        categories = (categories,)
    image_dir = Path(image_dir) if image_dir is not None else root / "images"

    result: dict[str, FashionIQCategory] = {}
    for category in categories:
        image_ids = load_fashion_iq_image_ids(root, category, split)
        triplets = load_fashion_iq_triplets(root, category, split)
        in_split = set(image_ids)
        missing: list[str] = []
        for t in triplets:
            for image_id in (t.reference_id, t.target_id):
                if image_id not in in_split:
                    in_split.add(image_id)
                    missing.append(image_id)
        if missing and missing_ids == "raise":
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DatasetFormatError(
                caption_file(root, category, split),
                f"{len(missing)} image id(s) used by triplets are not in "
                f"{split_file(root, category, split).name}: {shown} "
                "(pass missing_ids='add' to add them to the gallery)",
            )
        ids = protocol_gallery_ids(image_ids + missing, triplets, gallery)
        items = gallery_items(ids, category, image_dir, image_extension)
        result[category] = FashionIQCategory(category, split, items, triplets, added_ids=missing)
    return result


def check_images(items: Iterable[ItemRecord]) -> None:
    """Raise :class:`DatasetNotFoundError` if any item's image file is missing.

    The error names the first missing file and says how many of how many are missing, with a
    few more examples, so one check answers "is my images folder complete?". Items whose image
    is held in memory (bytes, arrays) have nothing to check and are skipped.
    """
    paths = [Path(item.image) for item in items if isinstance(item.image, (str, Path))]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        examples = ", ".join(p.name for p in missing[1:4])
        hint = f"{len(missing)} of {len(paths)} images missing"
        if examples:
            hint += f"; also {examples}" + (", ..." if len(missing) > 4 else "")
        raise DatasetNotFoundError(missing[0], hint)
