"""The one dataset interface that training and evaluation use for every source.

Every loader (the embedded catalogue, Fashion-MNIST, Fashion-IQ, FashionGen, Fashion200K,
VITON-HD/MGD) returns plain records:

- :class:`ItemRecord` — one product image with its captions (CMR, FIC, FIG);
- :class:`TripletRecord` — reference item, modifying texts, target item (CIR);
- :class:`TryOnRecord` — person image, agnostic mask, garment, sketch (design / try-on).

Records hold an image *source* (a file path, raw bytes or an in-memory array/PIL image), loaded
lazily by :func:`load_image`, so that a record list of 100k items stays small in memory.
:class:`ItemDataset` and :class:`TripletDataset` wrap record lists as ``torch.utils.data``
datasets.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError

#: An image as a record may carry it: a path to a file, encoded bytes, a uint8 HxWxC array or a
#: PIL image.
ImageSource = str | Path | bytes | np.ndarray | Image.Image

#: The caption styles of the paper's FIC task.
CAPTION_STYLES = ("short", "professional", "detailed")


def load_image(source: ImageSource, mode: str = "RGB") -> Image.Image:
    """Open an image source as a PIL image in ``mode``.

    A missing file raises :class:`DatasetNotFoundError` and an unreadable one
    :class:`DatasetFormatError`, both naming the file.
    """
    if isinstance(source, Image.Image):
        return source.convert(mode)
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype != np.uint8:
            raise DatasetFormatError("<array>", f"expected a uint8 image array, got {array.dtype}")
        return Image.fromarray(array).convert(mode)
    if isinstance(source, (bytes, bytearray)):
        try:
            image = Image.open(io.BytesIO(source))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetFormatError("<bytes>", f"not a readable image ({exc})") from exc
        return image.convert(mode)
    path = Path(source)
    if not path.is_file():
        raise DatasetNotFoundError(path, "image missing")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetFormatError(path, f"not a readable image ({exc})") from exc


@dataclass
class ItemRecord:
    """One catalogue item: an image, its category, attributes and captions by style."""

    item_id: str
    image: ImageSource
    category: str = ""
    captions: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def caption(self, style: str = "short") -> str:
        """The caption in ``style``, falling back to any caption the item has."""
        if style in self.captions:
            return self.captions[style]
        if not self.captions:
            raise KeyError(f"item {self.item_id!r} has no captions")
        return next(iter(self.captions.values()))

    def load_image(self, mode: str = "RGB") -> Image.Image:
        return load_image(self.image, mode)


@dataclass
class TripletRecord:
    """A composed-retrieval triplet: reference + modifying texts -> target."""

    reference_id: str
    target_id: str
    relative_captions: list[str]
    category: str = ""
    changed_attributes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def modification_text(self) -> str:
        """The captions joined into one modifying text, as the Fashion-IQ protocol does."""
        return join_relative_captions(self.relative_captions)


@dataclass
class TryOnRecord:
    """One VITON-HD / MGD sample: person, agnostic mask, in-shop garment and garment sketch."""

    sample_id: str
    person: ImageSource
    garment: ImageSource
    agnostic_mask: ImageSource
    sketch: ImageSource | None = None
    text: str = ""
    garment_id: str = ""
    masked_person: ImageSource | None = None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; a line that is not a JSON
    object raises :class:`DatasetFormatError` naming the file and the line."""
    with Path(path).open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(path, f"line {lineno} is not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DatasetFormatError(path, f"line {lineno} is not a JSON object")
            yield lineno, row


def product_of(record: ItemRecord) -> str:
    """The product an item photo shows: FashionGen's ``product_id`` (h5 layout), else the first of
    its ``product_images`` (the official jsonl layout lists a product's images together), else the
    item itself. Protocols use it to treat several photos of one product alike."""
    attributes = record.attributes or {}
    if attributes.get("product_id") not in (None, ""):
        return str(attributes["product_id"])
    images = attributes.get("product_images")
    if images:
        return f"images:{images[0]}"
    return str(record.item_id)


def join_relative_captions(captions: Sequence[str]) -> str:
    """Join Fashion-IQ's two modifying texts into one: stripped, empty ones dropped, " and "."""
    parts = [c.strip().rstrip(".") for c in captions if c and c.strip()]
    return " and ".join(parts)


class ItemDataset:
    """A ``torch.utils.data.Dataset`` of item records.

    ``__getitem__`` returns a dict with the loaded image (passed through ``transform`` if given),
    the caption in ``caption_style``, and the record's id, category and index.
    """

    def __init__(
        self,
        items: Sequence[ItemRecord],
        transform: Callable[[Image.Image], Any] | None = None,
        caption_style: str = "short",
    ):
        self.items = list(items)
        self.transform = transform
        self.caption_style = caption_style
        self._index = {item.item_id: i for i, item in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def index_of(self, item_id: str) -> int:
        return self._index[item_id]

    def get(self, item_id: str) -> ItemRecord:
        return self.items[self._index[item_id]]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        image = item.load_image()
        return {
            "index": index,
            "item_id": item.item_id,
            "category": item.category,
            "image": self.transform(image) if self.transform else image,
            "caption": item.caption(self.caption_style) if item.captions else "",
        }


class TripletDataset:
    """A ``torch.utils.data.Dataset`` of CIR triplets over an item gallery.

    Every triplet's reference and target must be in ``gallery``; a missing id raises a
    ``KeyError`` naming it at construction, so no query is silently dropped later.
    """

    def __init__(
        self,
        triplets: Sequence[TripletRecord],
        gallery: ItemDataset,
        transform: Callable[[Image.Image], Any] | None = None,
    ):
        self.triplets = list(triplets)
        self.gallery = gallery
        self.transform = transform
        for t in self.triplets:
            for item_id in (t.reference_id, t.target_id):
                if item_id not in gallery._index:
                    raise KeyError(f"triplet refers to item {item_id!r}, which is not in the gallery")

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        t = self.triplets[index]
        ref = self.gallery.get(t.reference_id).load_image()
        tgt = self.gallery.get(t.target_id).load_image()
        tf = self.transform or (lambda x: x)
        return {
            "index": index,
            "reference_id": t.reference_id,
            "target_id": t.target_id,
            "target_index": self.gallery.index_of(t.target_id),
            "category": t.category,
            "reference": tf(ref),
            "target": tf(tgt),
            "text": t.modification_text,
        }


def sentence_prompt(reference_caption: str | None, modification: str) -> str:
    """The text input: the reference's caption, then the relative caption (the paper's
    sentence-level prompt); the relative caption alone without a caption."""
    if not reference_caption:
        return modification
    return f"{reference_caption.strip().rstrip('.')}. {modification}"
