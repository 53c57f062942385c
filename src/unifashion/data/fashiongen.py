"""FashionGen (Rostamzadeh et al., 2018): product photos with professional descriptions.

Two layouts are read; both give item records whose caption is the product description, in the
"professional" caption style (FashionGen is what that style imitates).

(a) The original h5 files (``fashiongen_256_256_{train,validation}.h5``): one row per image, in
    datasets ``input_image`` (N, 256, 256, 3) uint8 and, shaped (N, 1), byte strings
    ``input_description``, ``input_name``, ``input_category``, ``input_subcategory``,
    ``input_pose``, ``input_gender``, ``input_brand``, ... and ``input_productID``. Only
    ``input_image`` and ``input_description`` are required; the text columns are read at load
    time (small), the images row by row when a record's ``image`` is read
    (:class:`FashionGenH5Item`), so a 260k-image file costs no image memory up front.

(b) The jsonl annotations of the official UniFashion code: one JSON object per line. Its
    FashionGen files (``annotation_{split}.jsonl``) hold ``{"index": "<JSON-encoded image
    name>", "description": text}`` with images at ``{image_dir}/{name}.jpg`` (the official code
    keeps train images in ``image/`` and validation images in ``image_val/``); its
    ``*_object.jsonl`` files hold a JSON-encoded *list* of names per product, and we give one
    record per image (attribute ``product_images`` lists the product's images). We also read the
    generic layout ``{"image": path, "caption": text}`` (``image_path`` / ``file_name`` and
    ``description`` / ``text`` accepted as synonyms), with relative paths resolved against
    ``image_dir``. Other scalar fields of a line (``category``, ``subcategory``, ...) become
    attributes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import ItemRecord

SOURCE = "fashiongen"
CAPTION_STYLE = "professional"

#: h5 text columns copied into attributes (when present), by attribute name.
H5_ATTRIBUTE_COLUMNS = {
    "name": "input_name",
    "subcategory": "input_subcategory",
    "pose": "input_pose",
    "gender": "input_gender",
    "brand": "input_brand",
    "composition": "input_composition",
    "department": "input_department",
    "season": "input_season",
}
JSONL_IMAGE_KEYS = ("image", "image_path", "file_name")
JSONL_CAPTION_KEYS = ("caption", "description", "text")


# ----------------------------------------------------------------------------- h5 layout


class H5ImageRows:
    """Reads single rows of an image dataset of an h5 file, opening the file on first use.

    The open handle is per process (a DataLoader worker re-opens it after fork) and is not
    pickled, so records holding a reader travel to workers cheaply.
    """

    def __init__(self, path: str | Path, dataset: str = "input_image"):
        self.path = Path(path)
        self.dataset = dataset
        self._file: Any = None
        self._pid: int | None = None

    def read(self, row: int) -> np.ndarray:
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return np.asarray(self._file[self.dataset][row])

    def __getstate__(self) -> dict:
        return {"path": self.path, "dataset": self.dataset}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["dataset"])


class FashionGenH5Item(ItemRecord):
    """An :class:`ItemRecord` whose ``image`` is read from its h5 row each time it is accessed.

    ``image`` is a property returning the (256, 256, 3) uint8 array, so ``record.load_image()``
    and ``load_image(record.image)`` both work; it cannot be assigned.
    """

    def __init__(self, *, rows: H5ImageRows, row: int, **fields: Any):
        self.rows = rows
        self.row = row
        super().__init__(image=None, **fields)

    @property
    def image(self) -> np.ndarray:  # type: ignore[override]
        return self.rows.read(self.row)

    @image.setter
    def image(self, value: Any) -> None:
        # ItemRecord.__init__ assigns image=None; any real assignment would be silently lost.
        if value is not None:
            raise AttributeError("the image of a FashionGen h5 item is read from its file")

    def __eq__(self, other: object) -> bool:
        # The dataclass __eq__ would compare freshly read image arrays; compare where they come from.
        if not isinstance(other, FashionGenH5Item):
            return NotImplemented
        return (self.rows.path, self.rows.dataset, self.row) == (other.rows.path, other.rows.dataset, other.row) and (
            self.item_id, self.category, self.captions, self.attributes, self.source
        ) == (other.item_id, other.category, other.captions, other.attributes, other.source)

    def __repr__(self) -> str:
        return f"FashionGenH5Item(item_id={self.item_id!r}, row={self.row}, file={str(self.rows.path)!r})"


def _text(value: Any) -> str:
    """One cell of an h5 text column as str: bytes decoded (UTF-8, else Latin-1), numbers as text."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError:
            return bytes(value).decode("latin-1").strip()
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    if isinstance(value, (np.floating, float)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _column(h5file: Any, path: Path, key: str, n: int) -> list[str]:
    """The first ``n`` cells of text column ``key``, which must have one row per image."""
    data = h5file[key]
    n_images = h5file["input_image"].shape[0]
    if data.ndim == 0 or data.shape[0] != n_images:
        raise DatasetFormatError(
            path, f"dataset {key!r} has shape {data.shape}, but input_image has {n_images} rows"
        )
    return [_text(v) for v in data[:n]]


def load_fashiongen_h5(path: str | Path, limit: int | None = None) -> list[FashionGenH5Item]:
    """Item records of an original FashionGen h5 file (the first ``limit`` rows if given).

    ``item_id`` is ``{productID}_{row}`` (``{row}`` without a productID column): a product has
    several images (poses), so the product id alone is not unique. ``attributes`` holds
    ``category``, ``product_id``, ``row`` and the text columns of :data:`H5_ATTRIBUTE_COLUMNS`.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, "FashionGen h5 file missing")
    try:
        h5file = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetFormatError(path, f"not a readable HDF5 file ({exc})") from exc
    with h5file:
        for key in ("input_image", "input_description"):
            if key not in h5file:
                raise DatasetFormatError(path, f"missing dataset {key!r} (has: {sorted(h5file.keys())})")
        images = h5file["input_image"]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DatasetFormatError(
                path, f"input_image must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}"
            )
        n = images.shape[0] if limit is None else min(limit, images.shape[0])
        descriptions = _column(h5file, path, "input_description", n)
        categories = _column(h5file, path, "input_category", n) if "input_category" in h5file else [""] * n
        product_ids = _column(h5file, path, "input_productID", n) if "input_productID" in h5file else None
        extra = {
            name: _column(h5file, path, key, n) for name, key in H5_ATTRIBUTE_COLUMNS.items() if key in h5file
        }

    rows = H5ImageRows(path)
    items = []
    for row in range(n):
        attributes: dict[str, Any] = {"category": categories[row], "row": row}
        if product_ids is not None:
            attributes["product_id"] = product_ids[row]
        attributes.update({name: values[row] for name, values in extra.items()})
        items.append(
            FashionGenH5Item(
                rows=rows,
                row=row,
                item_id=f"{product_ids[row]}_{row}" if product_ids is not None else str(row),
                category=categories[row],
                captions={CAPTION_STYLE: descriptions[row]},
                attributes=attributes,
                source=SOURCE,
            )
        )
    return items


# ----------------------------------------------------------------------------- jsonl layout


def _decode_index(value: Any) -> list[str]:
    """The official layout's ``index`` field -> image names (one, or a product's several)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def load_fashiongen_jsonl(
    path: str | Path,
    image_dir: str | Path | None = None,
    image_extension: str = "jpg",
) -> list[ItemRecord]:
    """Item records of a FashionGen jsonl annotation file (either layout; see the module doc).

    ``image_dir`` defaults to the jsonl file's folder. ``image_extension`` completes the bare
    image names of the official ``index`` layout. A line that is not a JSON object, lacks an
    image or a caption field, or repeats an image raises :class:`DatasetFormatError` naming the
    file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, "FashionGen annotation file missing")
    image_dir = Path(image_dir) if image_dir is not None else path.parent
    suffix = "." + image_extension.lstrip(".")
    items: list[ItemRecord] = []
    line_of: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(path, f"line {line_number}: not valid JSON ({exc})") from exc
            if not isinstance(entry, dict):
                raise DatasetFormatError(path, f"line {line_number}: expected a JSON object, got {entry!r:.80}")

            caption_key = next((k for k in JSONL_CAPTION_KEYS if k in entry), None)
            if caption_key is None or not isinstance(entry[caption_key], str):
                raise DatasetFormatError(
                    path, f"line {line_number}: no caption string (one of {JSONL_CAPTION_KEYS}) in {sorted(entry)}"
                )
            image_key = next((k for k in JSONL_IMAGE_KEYS if k in entry), None)
            if image_key is not None:
                if not isinstance(entry[image_key], str) or not entry[image_key]:
                    raise DatasetFormatError(path, f"line {line_number}: {image_key!r} is not a path string")
                names = [entry[image_key]]
                image_paths = [image_dir / entry[image_key]]
            elif "index" in entry:
                names = _decode_index(entry["index"])
                image_paths = [image_dir / f"{name}{suffix}" for name in names]
            else:
                raise DatasetFormatError(
                    path,
                    f"line {line_number}: no image field (one of {JSONL_IMAGE_KEYS + ('index',)}) in {sorted(entry)}",
                )

            used = {caption_key, image_key or "index"}
            attributes = {
                k: v for k, v in entry.items() if k not in used and isinstance(v, (str, int, float, bool))
            }
            category = str(attributes.get("category", ""))
            if len(names) > 1:
                attributes["product_images"] = names
            for name, image_path in zip(names, image_paths, strict=True):
                if name in line_of:
                    raise DatasetFormatError(
                        path, f"line {line_number}: image {name!r} already listed on line {line_of[name]}"
                    )
                line_of[name] = line_number
                items.append(
                    ItemRecord(
                        item_id=name,
                        image=image_path,
                        category=category,
                        captions={CAPTION_STYLE: entry[caption_key].strip()},
                        attributes=dict(attributes),
                        source=SOURCE,
                    )
                )
    return items


def load_fashiongen(path: str | Path, **kwargs: Any) -> list[ItemRecord]:
    """Load a FashionGen file by its suffix: ``.h5``/``.hdf5`` or ``.jsonl``/``.json`` (one object per line)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return list(load_fashiongen_h5(path, **kwargs))
    if suffix in (".jsonl", ".json"):
        return load_fashiongen_jsonl(path, **kwargs)
    raise ValueError(f"cannot tell the FashionGen layout of {path}: expected a .h5 or .jsonl file")
