"""Item records from an image collection: the embedded catalogue's folder, or an image folder
with a metadata file (``metadata.jsonl`` or ``metadata.csv``), as ``unifashion index`` and
triplet mining read them (see :func:`read_metadata_file` for the columns).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import ItemRecord, iter_jsonl

#: Metadata file names looked for in an image folder, in this order.
METADATA_FILE_NAMES = ("metadata.jsonl", "metadata.csv")

# Metadata columns with a meaning of their own; other CSV columns become attributes.
_ID_KEYS = ("id", "item_id")
_PATH_KEYS = ("path", "image", "image_path")


def _first_present(row: dict[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = row.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _record_from_row(row: dict[str, Any], base: Path, path: Path, where: str) -> ItemRecord:
    """One metadata row -> an item record (see :func:`read_metadata_file` for the columns)."""
    item_id = _first_present(row, _ID_KEYS)
    image = _first_present(row, _PATH_KEYS)
    if item_id is None or image is None:
        raise DatasetFormatError(path, f"{where} needs an 'id' and a 'path' (got keys {sorted(row)})")
    captions: dict[str, str] = {}
    given = row.get("captions")
    if isinstance(given, dict):
        captions.update({str(k): str(v) for k, v in given.items()})
    elif given not in (None, ""):
        raise DatasetFormatError(path, f"{where}: 'captions' must be an object of style -> text")
    attributes: dict[str, Any] = {}
    given = row.get("attributes")
    if isinstance(given, dict):
        attributes.update(given)
    elif given not in (None, ""):
        raise DatasetFormatError(path, f"{where}: 'attributes' must be an object")
    for key, value in row.items():
        if key in (*_ID_KEYS, *_PATH_KEYS, "category", "captions", "attributes") or value in (None, ""):
            continue
        if key == "caption":
            captions.setdefault("caption", str(value))
        elif key.startswith("caption_"):
            captions.setdefault(key[len("caption_"):], str(value))
        else:
            attributes[key] = value
    image_path = Path(image).expanduser()
    if not image_path.is_absolute():
        image_path = base / image_path
    return ItemRecord(item_id=item_id, image=image_path.resolve(), category=str(row.get("category") or ""),
                      captions=captions, attributes=attributes, source=str(path))


def read_metadata_file(path: str | os.PathLike) -> list[ItemRecord]:
    """Items listed in a JSONL or CSV metadata file; image paths are relative to its folder.

    Each line (JSONL object) or row (CSV with a header) describes one item:

    - ``id`` (or ``item_id``) and ``path`` (or ``image``): required;
    - ``category``: optional;
    - captions: ``caption`` (stored under the style name "caption"), ``caption_<style>`` (e.g.
      ``caption_short``) and, in JSONL, ``captions`` as an object ``{style: text}``;
    - attributes: in JSONL an ``attributes`` object; every other column or key is an attribute too.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, "the metadata file of an image folder (JSONL or CSV)")
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.suffix.lower() == ".jsonl":
        rows = [(f"line {lineno}", row) for lineno, row in iter_jsonl(path)]
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise DatasetFormatError(path, "no header row")
            for number, row in enumerate(reader, 2):
                rows.append((f"row {number}", {k: v for k, v in row.items() if k is not None}))
    else:
        raise DatasetFormatError(path, "a metadata file must end in .jsonl or .csv")
    records = [_record_from_row(row, path.parent, path, where) for where, row in rows]
    seen: set[str] = set()
    for record in records:
        if record.item_id in seen:
            raise DatasetFormatError(path, f"the id {record.item_id!r} appears more than once")
        seen.add(record.item_id)
    if not records:
        raise DatasetFormatError(path, "lists no items")
    return records


def load_item_records(source: str | os.PathLike | Sequence[ItemRecord], split: str | None = None) -> list[ItemRecord]:
    """Item records from any source the builder reads (see the module docstring).

    ``split`` picks one split of an embedded catalogue; it is an error for other sources.
    """
    if not isinstance(source, (str, os.PathLike)):
        if split is not None:
            raise ValueError("split only applies to an embedded catalogue folder")
        records = list(source)
        if not all(isinstance(r, ItemRecord) for r in records):
            raise ValueError("records must be ItemRecord objects")
        return records
    path = Path(source)
    if path.is_dir() and (path / "catalogue.json").is_file():
        from unifashion.data.synthetic.catalogue import load_catalogue

        records = load_catalogue(path).item_records(split)
        if not records:
            raise ValueError(f"the catalogue at {path} has no items in split {split!r}")
        return records
    if split is not None:
        raise ValueError(f"split={split!r} only applies to an embedded catalogue folder; {path} is not one")
    if path.is_dir():
        for name in METADATA_FILE_NAMES:
            if (path / name).is_file():
                return read_metadata_file(path / name)
        names = " or ".join(METADATA_FILE_NAMES)
        raise DatasetNotFoundError(path, f"not an embedded catalogue (catalogue.json) nor an image folder with {names}")
    return read_metadata_file(path)
