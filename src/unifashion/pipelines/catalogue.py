"""Building a catalogue index from product images: embed, caption, store.

For every item the builder computes, in batches:

- Z, the model's ``num_queries`` image embeddings (``encode_image``), the vectors that max-sim
  search ranks;
- the model's own caption of the image in the ``"detailed"`` style (``caption``), stored with the
  item as its ``fusion_caption``;
- that caption's text embedding (``encode_text``), the item's caption-fusion vector Z_C, which
  composed retrieval adds to the score (``max_q <e, Z_q> + <e, Z_C>``, the paper's caption fusion).

Sources it reads (:func:`load_item_records`):

- a list of :class:`~unifashion.data.records.ItemRecord`;
- a folder of the embedded catalogue (``catalogue.json`` + ``items.jsonl``, written by
  ``unifashion data build``), optionally one split of it;
- a folder of images with a metadata file ``metadata.jsonl`` or ``metadata.csv`` (or the path of
  such a file), one item per line or row (see :func:`read_metadata_file`).

Builds are resumable: vectors are committed every ``commit_every`` items, and building into an
existing index skips the ids it already holds, so a stopped build continues where it stopped
when run again.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import ItemRecord, iter_jsonl, load_image
from unifashion.index.catalogue import CatalogueIndex

#: The caption style of the stored (fusion) captions: the paper fuses Fashion-IQ-cap-like captions.
FUSION_CAPTION_STYLE = "detailed"

#: Metadata file names looked for in an image folder, in this order.
METADATA_FILE_NAMES = ("metadata.jsonl", "metadata.csv")

# Items embedded between two commits: each commit writes one vector segment and rewrites the
# FAISS file, so this trades commit cost against the work a stopped build repeats.
_COMMIT_EVERY = 1024

# Metadata columns with a meaning of their own; other CSV columns become attributes.
_ID_KEYS = ("id", "item_id")
_PATH_KEYS = ("path", "image", "image_path")


@dataclass(frozen=True)
class EmbeddedItems:
    """What the builder computes for a batch of images."""

    multi_vectors: np.ndarray  # (B, num_queries, dim) float32, L2-normalised
    fusion_vectors: np.ndarray  # (B, dim) float32, text embeddings of the generated captions
    fusion_captions: list[str]  # the generated captions


@dataclass(frozen=True)
class BuildReport:
    """The outcome of :meth:`CatalogueBuilder.build`."""

    index_dir: Path
    added: int  # items embedded and stored by this call
    skipped: int  # items the index already held (a resumed build)
    total: int  # items in the index afterwards
    seconds: float

    def __str__(self) -> str:
        rate = self.added / self.seconds if self.seconds > 0 else 0.0
        return (f"indexed {self.added} items ({self.skipped} already present) into {self.index_dir} "
                f"in {self.seconds:.1f} s ({rate:.1f} items/s); the index holds {self.total} items")


# -- sources ---------------------------------------------------------------------------------


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
        from unifashion.data.catalogue import load_catalogue

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


def index_metadata(record: ItemRecord, image_path: str | None = None) -> dict[str, Any]:
    """The metadata the index stores for a record: an image given as a file is stored as its
    absolute path, so that the index can be served from any working directory."""
    if image_path is None:
        image_path = str(Path(record.image).resolve()) if isinstance(record.image, (str, os.PathLike)) else ""
    return {"category": record.category, "captions": dict(record.captions), "attributes": dict(record.attributes),
            "image_path": image_path}


# -- the builder -----------------------------------------------------------------------------


class CatalogueBuilder:
    """Embeds catalogue items with a UniFashion model and stores them in a :class:`CatalogueIndex`.

    ``lock``, when given, is held around every model call (the service shares one model between
    request threads).
    """

    def __init__(self, model, batch_size: int = 32, progress: bool = True, caption_style: str = FUSION_CAPTION_STYLE,
                 lock: threading.Lock | threading.RLock | None = None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model.eval()
        self.batch_size = batch_size
        self.progress = progress
        self.caption_style = caption_style
        self._lock = lock if lock is not None else nullcontext()

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.embed_dim)

    @property
    def num_queries(self) -> int:
        return int(self.model.num_queries)

    def embed(self, images: Sequence[Any]) -> EmbeddedItems:
        """Z, generated captions and their embeddings for one batch of (PIL) images."""
        with self._lock:
            multi = self.model.encode_image(list(images))
            captions = self.model.caption(list(images), style=self.caption_style)
            fusion = self.model.encode_text(captions)
        return EmbeddedItems(multi.float().cpu().numpy(), fusion.float().cpu().numpy(), list(captions))

    def check_index(self, index: CatalogueIndex) -> None:
        """Raise if the index's vector shape is not the model's."""
        if (index.num_queries, index.dim) != (self.num_queries, self.embed_dim):
            raise ValueError(
                f"the index at {index.folder} stores {index.num_queries} x {index.dim} vectors per item; this model "
                f"makes {self.num_queries} x {self.embed_dim}: build a new index for this model"
            )

    def add(self, index: CatalogueIndex, records: Sequence[ItemRecord], *, upsert: bool = False,
            metadata: Sequence[dict[str, Any]] | None = None, commit_every: int = _COMMIT_EVERY) -> int:
        """Embed ``records`` and add them to ``index`` (``upsert``: replace ids it holds).

        Committed every ``commit_every`` items, so a failure loses at most that much work.
        ``metadata`` overrides :func:`index_metadata` per record. Returns the number added.
        """
        self.check_index(index)
        if metadata is not None and len(metadata) != len(records):
            raise ValueError(f"{len(metadata)} metadata entries for {len(records)} records")
        store = index.upsert if upsert else index.add
        bar = tqdm(total=len(records), desc="embedding catalogue", unit="item", disable=not self.progress)
        pending: list[tuple[int, EmbeddedItems]] = []  # (position of the batch's first record, embeddings)
        pending_count = 0

        def flush() -> None:
            nonlocal pending, pending_count
            if not pending:
                return
            start = pending[0][0]
            chunk = records[start:start + pending_count]
            chunk_meta = metadata[start:start + pending_count] if metadata is not None else [
                index_metadata(r) for r in chunk]
            store([r.item_id for r in chunk],
                  np.concatenate([e.multi_vectors for _, e in pending]),
                  np.concatenate([e.fusion_vectors for _, e in pending]),
                  chunk_meta,
                  fusion_captions=[c for _, e in pending for c in e.fusion_captions],
                  commit=True, progress=False)
            pending, pending_count = [], 0

        try:
            for start in range(0, len(records), self.batch_size):
                batch = records[start:start + self.batch_size]
                embedded = self.embed([load_image(r.image) for r in batch])
                pending.append((start, embedded))
                pending_count += len(batch)
                bar.update(len(batch))
                if pending_count >= commit_every:
                    flush()
            flush()
        finally:
            bar.close()
        return len(records)

    def build(self, source: str | os.PathLike | Sequence[ItemRecord], index_dir: str | os.PathLike, *,
              split: str | None = None, ann: str = "flat", resume: bool = True, **ann_options) -> BuildReport:
        """Index every item of ``source`` into ``index_dir`` (created if needed).

        With ``resume`` (the default) an existing index is opened and items it already holds are
        skipped; without, an existing index is an error. ``ann`` and ``ann_options`` (nlist,
        nprobe, pq_m) configure a new index (see :meth:`CatalogueIndex.create`).
        """
        started = time.perf_counter()
        records = load_item_records(source, split)
        seen: set[str] = set()
        for record in records:
            if record.item_id in seen:
                raise ValueError(f"the source lists the id {record.item_id!r} more than once")
            seen.add(record.item_id)
        folder = Path(index_dir)
        if (folder / "catalogue.sqlite").is_file():
            if not resume:
                raise FileExistsError(f"{folder} already holds an index; pass resume=True to add to it")
            index = CatalogueIndex.open(folder)
        else:
            index = CatalogueIndex.create(folder, dim=self.embed_dim, num_queries=self.num_queries, ann=ann,
                                          **ann_options)
        with index:
            self.check_index(index)
            todo = [r for r in records if r.item_id not in index]
            self.add(index, todo)
            total = len(index)
        return BuildReport(folder, added=len(todo), skipped=len(records) - len(todo), total=total,
                           seconds=time.perf_counter() - started)


def build_index(model, source: str | os.PathLike | Sequence[ItemRecord], index_dir: str | os.PathLike, *,
                split: str | None = None, batch_size: int = 32, progress: bool = True, ann: str = "flat",
                resume: bool = True, **ann_options) -> BuildReport:
    """Embed every item of ``source`` with ``model`` into the index at ``index_dir``.

    ``source``: item records, an embedded catalogue folder (with ``split``), an image folder with
    ``metadata.jsonl`` / ``metadata.csv``, or such a file. See :class:`CatalogueBuilder`.
    """
    builder = CatalogueBuilder(model, batch_size=batch_size, progress=progress)
    return builder.build(source, index_dir, split=split, ann=ann, resume=resume, **ann_options)
