"""``--data SPEC``: which datasets a training or evaluation run reads, and in what proportion.

A spec is one or more comma-separated sources, ``KIND:PATH[?OPTION=VALUE&...][@WEIGHT]``::

    fashiongen:/data/fashiongen/fashiongen_256_256_train.h5
    fashiongen:/data/fg@0.5,fashion200k:/data/f200k@0.3,fashioniq:/data/fiq@0.2
    imagefolder:/shop/catalogue?style=short&holdout=0.1

Kinds (:data:`SOURCE_KINDS`), each with the caption style that its texts are written in (the
instruction the caption LM gets follows it, as in the paper's Table 7):

========== ============================================================ ============= ===========
kind       PATH                                                          captions      triplets
========== ============================================================ ============= ===========
embedded   an embedded catalogue folder (``unifashion data build``)     all three     yes
fashiongen an h5 / jsonl file, or a folder with                          professional  no
           ``fashiongen_256_256_{train,validation}.h5`` or
           ``annotation_{train,validation}.jsonl``
fashion200k the root (``labels/``, image folders)                        short         no
fashioniq  the root (``captions/``, ``image_splits/``, ``images/``);     detailed      yes
           image captions (Fashion-IQ-cap) from
           ``captions/imgcap.{category}.{split}.json`` when present
viton      the VITON-HD / MGD root; garments with MGD captions          short         no
imagefolder a folder with ``metadata.jsonl`` / ``metadata.csv``          ``style=``    no
========== ============================================================ ============= ===========

Options: ``split=`` (default: ``train`` for training; the kind's test split for evaluation),
``style=`` (the style of an image folder's plain ``caption`` column; default professional, a
shop's product descriptions), ``holdout=`` (image folder: the fraction of items held out for
evaluation, by a hash of the id, when the metadata has no ``split`` column; default 0.2),
``categories=`` (Fashion-IQ / Fashion200K: ``dress+shirt``).

Weights are the share of each source in a training batch (normalised; every source weighted
or none: without weights, items are drawn uniformly from all sources together). Errors name the
source and what is wrong: an unknown kind, a path that does not exist, a weight that is not a
positive number, an unknown option.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import CAPTION_STYLES, ItemRecord, TripletRecord

SOURCE_KINDS = ("embedded", "fashiongen", "fashion200k", "fashioniq", "viton", "imagefolder")
#: The caption style of each kind's texts.
SOURCE_STYLES = {"fashiongen": "professional", "fashion200k": "short", "fashioniq": "detailed", "viton": "short",
                 "imagefolder": "professional", "embedded": "detailed"}
#: The split each kind evaluates on by default (its standard test split).
EVAL_SPLITS = {"embedded": "test", "fashiongen": "validation", "fashion200k": "test", "fashioniq": "val",
               "viton": "test", "imagefolder": "test"}
OPTIONS = {"split", "style", "holdout", "categories"}
#: The names ``unifashion data check`` uses for the same formats.
KIND_ALIASES = {"fashion-iq": "fashioniq", "fashion-200k": "fashion200k", "folder": "imagefolder"}


class DataSpecError(ValueError):
    """A ``--data`` spec that cannot be read; the message names the source and the problem."""


@dataclass
class SourceSpec:
    kind: str
    path: Path
    weight: float | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def style(self) -> str:
        return self.options.get("style", SOURCE_STYLES[self.kind])

    def describe(self) -> str:
        opts = "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}:{self.path}" + (f"?{opts}" if opts else "") + (
            f"@{self.weight:g}" if self.weight is not None else "")


def parse_data_spec(spec: str) -> list[SourceSpec]:
    """Parse a spec (see the module docstring); paths are checked to exist."""
    if not spec or not spec.strip():
        raise DataSpecError("an empty --data spec; expected KIND:PATH[@WEIGHT], e.g. fashiongen:/data/fg.h5")
    sources = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            raise DataSpecError(f"an empty source in --data {spec!r} (two commas, or a trailing one)")
        kind, sep, rest = entry.partition(":")
        kind = KIND_ALIASES.get(kind.strip().lower(), kind.strip().lower())
        if not sep or not rest:
            raise DataSpecError(f"source {entry!r}: expected KIND:PATH, with KIND one of {list(SOURCE_KINDS)}")
        if kind not in SOURCE_KINDS:
            raise DataSpecError(f"source {entry!r}: unknown kind {kind!r}; expected one of {list(SOURCE_KINDS)}")
        weight = None
        if "@" in rest:
            rest, _, weight_text = rest.rpartition("@")
            try:
                weight = float(weight_text)
            except ValueError:
                raise DataSpecError(f"source {entry!r}: the weight {weight_text!r} is not a number") from None
            if not weight > 0 or weight != weight or weight == float("inf"):
                raise DataSpecError(f"source {entry!r}: the weight must be a positive number, got {weight_text!r}")
        path_text, _, query = rest.partition("?")
        options = {}
        for pair in filter(None, query.split("&")):
            name, eq, value = pair.partition("=")
            if not eq or name not in OPTIONS:
                raise DataSpecError(f"source {entry!r}: unknown option {pair!r}; options are {sorted(OPTIONS)} "
                                    "as ?name=value&name=value")
            options[name] = value
        if "style" in options and options["style"] not in CAPTION_STYLES:
            raise DataSpecError(f"source {entry!r}: style must be one of {list(CAPTION_STYLES)}")
        if "holdout" in options:
            try:
                holdout = float(options["holdout"])
            except ValueError:
                holdout = -1.0
            if not 0.0 <= holdout < 1.0:
                raise DataSpecError(f"source {entry!r}: holdout must be a fraction in [0, 1), "
                                    f"got {options['holdout']!r}")
        path = Path(path_text).expanduser()
        if not path.exists():
            raise DatasetNotFoundError(path, f"the path of --data source {kind}")
        sources.append(SourceSpec(kind, path, weight, options))
    weighted = [s.weight is not None for s in sources]
    if any(weighted) and not all(weighted):
        raise DataSpecError(f"--data {spec!r}: give every source a weight (@W) or none")
    return sources


@dataclass
class LoadedSource:
    """One source read for one split: its items (with captions where it has them) and triplets."""

    spec: SourceSpec
    split: str
    items: list[ItemRecord]
    triplets: list[TripletRecord] = field(default_factory=list)

    @property
    def captioned(self) -> list[ItemRecord]:
        return [r for r in self.items if any(r.captions.get(s) for s in CAPTION_STYLES)]


def load_source(source: SourceSpec, split: str) -> LoadedSource:
    """Read ``source`` for ``split`` ("train", or the kind's own split names)."""
    loader = _LOADERS[source.kind]
    items, triplets = loader(source, split)
    for record in items:
        record.source = record.source or source.kind
    return LoadedSource(source, split, items, triplets)


def default_split(kind: str, training: bool) -> str:
    return "train" if training else EVAL_SPLITS[kind]


# ----------------------------------------------------------------------------- one loader per kind
def _embedded(source: SourceSpec, split: str):
    from unifashion.data.synthetic.catalogue import load_catalogue

    if not (source.path / "catalogue.json").is_file():
        raise DatasetNotFoundError(source.path / "catalogue.json", "not an embedded catalogue folder")
    catalogue = load_catalogue(source.path)
    return catalogue.item_records(split), catalogue.triplet_records(split)


def _fashiongen(source: SourceSpec, split: str):
    from unifashion.data.fashiongen import load_fashiongen

    path = source.path
    if path.is_dir():
        names = [f"fashiongen_256_256_{split}.h5", f"annotation_{split}.jsonl"]
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            raise DatasetNotFoundError(path / names[0],
                                       f"no FashionGen file for split {split!r} ({' or '.join(names)})")
        path = found[0]
        if path.suffix == ".jsonl":  # the official code keeps train images in image/, validation in image_val/
            images = path.parent / ("image" if split == "train" else "image_val")
            return load_fashiongen(path, image_dir=images if images.is_dir() else None), []
    return load_fashiongen(path), []


def _categories(source: SourceSpec) -> list[str] | None:
    return source.options["categories"].split("+") if "categories" in source.options else None


def _fashion200k(source: SourceSpec, split: str):
    from unifashion.data.fashion200k import load_fashion200k

    return load_fashion200k(source.path, split=split, categories=_categories(source)), []


def fashion_iq_caption_file(root: Path, category: str, split: str) -> Path:
    """Where Fashion-IQ-cap image captions are read from: ``{"image id": "caption", ...}``."""
    return root / "captions" / f"imgcap.{category}.{split}.json"


def _fashioniq(source: SourceSpec, split: str):
    """Galleries and triplets of every category; ids are ``category/id`` because shirt and toptee
    share images but keep separate galleries."""
    from unifashion.data.fashion_iq import FASHION_IQ_CATEGORIES, caption_file, load_fashion_iq

    categories = _categories(source)
    if categories is None:  # the categories present (all three in the real dataset)
        categories = [c for c in FASHION_IQ_CATEGORIES if caption_file(source.path, c, split).is_file()]
        if not categories:
            raise DatasetNotFoundError(caption_file(source.path, "dress", split),
                                       f"no Fashion-IQ caption files for split {split!r}")
    parts = load_fashion_iq(source.path, split=split, categories=categories)
    items, triplets = [], []
    for category, part in parts.items():
        captions = {}
        cap_file = fashion_iq_caption_file(source.path, category, split)
        if cap_file.is_file():
            try:
                captions = json.loads(cap_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(cap_file, f"not valid JSON ({exc})") from exc
            if not isinstance(captions, dict):
                raise DatasetFormatError(cap_file, "expected a JSON object {image id: caption}")
        for record in part.gallery:
            text = captions.get(record.item_id)
            record.attributes["image_id"] = record.item_id
            record.item_id = f"{category}/{record.item_id}"
            if text:
                record.captions = {source.style: str(text)}
            items.append(record)
        for t in part.triplets:
            t.reference_id, t.target_id = f"{category}/{t.reference_id}", f"{category}/{t.target_id}"
            triplets.append(t)
    return items, triplets


def _viton(source: SourceSpec, split: str):
    """The split's garments (one record per cloth image) with their MGD captions."""
    from unifashion.data.viton import load_viton

    items, seen = [], set()
    for record in load_viton(source.path, split=split, setting="paired"):
        if record.garment_id in seen:
            continue
        seen.add(record.garment_id)
        items.append(ItemRecord(item_id=record.garment_id, image=record.garment, category="garment",
                                captions={source.style: record.text} if record.text else {},
                                attributes={"person": str(record.person)}, source="viton"))
    return items, []


def holdout_part(item_id: str, fraction: float) -> str:
    """"test" for about ``fraction`` of ids (by a hash of the id, stable across runs), else "train"."""
    value = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") / 2**64
    return "test" if value < fraction else "train"


def _imagefolder(source: SourceSpec, split: str):
    """An image folder with metadata; plain ``caption`` columns take the source's style. Its
    ``split`` column picks the split when present; else ``holdout`` of the ids are the test part."""
    from unifashion.data.folder import load_item_records

    records = load_item_records(source.path)
    fraction = float(source.options.get("holdout", 0.2))
    chosen = []
    for record in records:
        captions = {k: v for k, v in record.captions.items() if k in CAPTION_STYLES}
        if record.captions.get("caption") and source.style not in captions:
            captions[source.style] = record.captions["caption"]
        record.captions = captions
        part = str(record.attributes.get("split") or holdout_part(record.item_id, fraction))
        if part in ("val", "validation") and split == "test":
            part = "test"
        if part == split:
            chosen.append(record)
    if not chosen:
        raise DatasetFormatError(source.path, f"no items in the {split!r} part (holdout={fraction})")
    return chosen, []


_LOADERS: dict[str, Any] = {"embedded": _embedded, "fashiongen": _fashiongen, "fashion200k": _fashion200k,
                            "fashioniq": _fashioniq, "viton": _viton, "imagefolder": _imagefolder}


def mixture_weights(sources: list[LoadedSource], sizes: list[int]) -> list[float] | None:
    """Per-item sampling weights for a batch sampler: source s's weight spread over its ``sizes[s]``
    items, so that it makes that share of a batch on average; None without weights."""
    if all(s.spec.weight is None for s in sources):
        return None
    total = sum(s.spec.weight for s, n in zip(sources, sizes, strict=True) if n)
    out: list[float] = []
    for s, n in zip(sources, sizes, strict=True):
        out.extend([s.spec.weight / total / n] * n)
    return out
