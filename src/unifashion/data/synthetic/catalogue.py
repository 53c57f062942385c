"""The embedded synthetic catalogue: sampled items, CIR triplets, splits, and their files.

The catalogue is made of *groups*: a base item plus items derived from it by 1-3 attribute edits.
Triplets link the base and its edits both ways. A whole group lands in one split, so no item
(and no near-copy of an item) is shared between train and test.

On disk (``build_catalogue_files``)::

    OUT/catalogue.json   the config and the counts
    OUT/items.jsonl      one item a line: id, split, category, attributes, captions, seed, image
    OUT/triplets.jsonl   one triplet a line: split, reference, target, captions, changed
    OUT/images/ID.png    the rendered product images

Same config, same bytes: JSON is written with sorted keys and PNGs carry no timestamps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unifashion import configuration
from unifashion.atomic import atomic_write
from unifashion.configuration import ConfigError
from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import ItemRecord, TripletRecord, iter_jsonl
from unifashion.data.synthetic.attributes import (
    ACHROMATIC,
    CATEGORIES,
    COLOURS,
    FITS,
    LIGHTNESS,
    NECKLINES,
    PATTERNS,
    SLEEVES,
    contrast_colours,
)
from unifashion.data.synthetic.captions import captions_for
from unifashion.data.synthetic.render import render_garment, run_render_jobs
from unifashion.data.synthetic.triplets import changed_attributes, relative_captions, sample_edit

SPLITS = ("train", "val", "test")


@dataclass
class CatalogueConfig:
    """How to build the embedded catalogue. ``n_items`` counts every item, edits included."""

    n_items: int = 2000
    image_size: int = 128
    seed: int = 0
    edits_per_group: int = 2
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    categories: tuple[str, ...] = tuple(CATEGORIES)

    def __post_init__(self):
        self.split_fractions = tuple(self.split_fractions)
        self.categories = tuple(self.categories)
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ConfigError(f"unknown categories {unknown}; expected some of {sorted(CATEGORIES)}")
        if self.n_items < 3:
            raise ConfigError(f"n_items must be at least 3, got {self.n_items}")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ConfigError(f"split_fractions must be three numbers summing to 1, got {self.split_fractions}")

    @classmethod
    def from_dict(cls, data: dict, where: str = "catalogue") -> CatalogueConfig:
        return configuration.from_dict(cls, data, where)


@dataclass
class CatalogueItem:
    item_id: str
    split: str
    attributes: dict
    captions: dict
    seed: int
    group: int

    @property
    def category(self) -> str:
        return self.attributes["category"]


@dataclass
class Catalogue:
    """Items and triplets of the embedded catalogue, with images rendered on demand or on disk."""

    config: CatalogueConfig
    items: list[CatalogueItem]
    triplets: list[TripletRecord]
    root: Path | None = None
    _by_id: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_id = {item.item_id: item for item in self.items}

    def item(self, item_id: str) -> CatalogueItem:
        return self._by_id[item_id]

    def image_path(self, item_id: str) -> Path | None:
        return None if self.root is None else self.root / "images" / f"{item_id}.png"

    def render(self, item_id: str):
        """The item's image (rendered now; identical to the file on disk)."""
        item = self._by_id[item_id]
        return render_garment(item.attributes, self.config.image_size, item.seed).image

    def item_records(self, split: str | None = None) -> list[ItemRecord]:
        """Items of ``split`` (all when None) as records of the common dataset interface."""
        out = []
        for item in self.items:
            if split is not None and item.split != split:
                continue
            path = self.image_path(item.item_id)
            image = path if path is not None else np.asarray(self.render(item.item_id))
            out.append(ItemRecord(item_id=item.item_id, image=image, category=item.category,
                                  captions=dict(item.captions), attributes=dict(item.attributes),
                                  source="embedded"))
        return out

    def triplet_records(self, split: str | None = None) -> list[TripletRecord]:
        return [t for t in self.triplets if split is None or self._by_id[t.reference_id].split == split]


def _item_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def sample_attributes(rng: np.random.Generator, category: str) -> dict:
    """Draw one item's attributes uniformly from the vocabulary of ``category``."""
    spec = CATEGORIES[category]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    attrs = {
        "category": category,
        "colour": colour,
        "lightness": "medium" if colour in ACHROMATIC else list(LIGHTNESS)[int(rng.integers(len(LIGHTNESS)))],
        # Solid is the most common pattern in real catalogues; the rest share the remainder.
        "pattern": "solid" if rng.random() < 0.35 else PATTERNS[1 + int(rng.integers(len(PATTERNS) - 1))],
        "length": spec["lengths"][int(rng.integers(len(spec["lengths"])))],
        "fit": FITS[int(rng.integers(len(FITS)))],
    }
    if attrs["pattern"] != "solid":
        options = contrast_colours(colour)
        attrs["pattern_colour"] = options[int(rng.integers(len(options)))]
    if spec["sleeves"]:
        attrs["sleeve"] = SLEEVES[int(rng.integers(len(SLEEVES)))]
    if spec["neckline"]:
        attrs["neckline"] = NECKLINES[int(rng.integers(len(NECKLINES)))]
    return attrs


def make_catalogue(config: CatalogueConfig | None = None) -> Catalogue:
    """Sample the catalogue's items, captions, triplets and splits (no images are rendered)."""
    config = config or CatalogueConfig()
    rng = np.random.default_rng(np.random.PCG64(config.seed))
    items: list[CatalogueItem] = []
    triplets: list[TripletRecord] = []
    group = 0
    cum = np.cumsum(config.split_fractions)
    while len(items) < config.n_items:
        category = config.categories[group % len(config.categories)]
        split = SPLITS[int(np.searchsorted(cum, rng.random(), side="right"))] if group >= 3 else SPLITS[group]
        base_attrs = sample_attributes(rng, category)
        members = [base_attrs]
        for _ in range(min(config.edits_per_group, config.n_items - len(items) - 1)):
            target, _ = sample_edit(base_attrs, rng)
            members.append(target)
        ids = []
        for attrs in members:
            index = len(items)
            seed = _item_seed(config.seed, index)
            item_id = f"{category}-{index:06d}"
            items.append(CatalogueItem(item_id, split, attrs, captions_for(attrs, seed), seed, group))
            ids.append(item_id)
        for member_id, attrs in zip(ids[1:], members[1:], strict=True):
            for ref_id, ref, tgt_id, tgt in ((ids[0], base_attrs, member_id, attrs),
                                            (member_id, attrs, ids[0], base_attrs)):
                triplets.append(TripletRecord(
                    reference_id=ref_id, target_id=tgt_id, category=category,
                    relative_captions=relative_captions(ref, tgt, rng),
                    changed_attributes=changed_attributes(ref, tgt)))
        group += 1
    return Catalogue(config=config, items=items, triplets=triplets)


def _render_to_file(args) -> None:
    attrs, size, seed, path = args
    render_garment(attrs, size, seed).image.save(path, format="PNG", optimize=False)


def build_catalogue_files(
    out_dir: str | os.PathLike,
    config: CatalogueConfig | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Catalogue:
    """Render the catalogue into ``out_dir`` (see the module docstring for the layout).

    Metadata is written last, through a temporary name, so an interrupted build never leaves an
    ``items.jsonl`` that points at images that were not written.
    """
    catalogue = make_catalogue(config)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(it.attributes, catalogue.config.image_size, it.seed, out / "images" / f"{it.item_id}.png")
            for it in catalogue.items]
    run_render_jobs(_render_to_file, jobs, workers=workers, desc="rendering catalogue", unit="img", chunksize=64,
                    progress=progress)
    _write_jsonl(out / "items.jsonl", (_item_row(it) for it in catalogue.items))
    _write_jsonl(out / "triplets.jsonl", (_triplet_row(t, catalogue) for t in catalogue.triplets))
    counts = {s: sum(it.split == s for it in catalogue.items) for s in SPLITS}
    tcounts = {s: len(catalogue.triplet_records(s)) for s in SPLITS}
    meta = {"config": configuration.to_dict(catalogue.config), "items": counts, "triplets": tcounts, "format": 1}
    atomic_write(out / "catalogue.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    catalogue.root = out
    return catalogue


def _item_row(item: CatalogueItem) -> dict:
    return {"id": item.item_id, "split": item.split, "category": item.category, "group": item.group,
            "attributes": item.attributes, "captions": item.captions, "seed": item.seed,
            "image": f"images/{item.item_id}.png"}


def _triplet_row(t: TripletRecord, catalogue: Catalogue) -> dict:
    return triplet_row(t, catalogue.item(t.reference_id).split)


def triplet_row(t: TripletRecord, split: str, **extra) -> dict:
    """One line of a triplet JSONL file (``triplets.jsonl``, mined triplet files); ``extra`` keys
    (e.g. ``source``) ride along and are ignored by :func:`read_triplets_jsonl`."""
    return {"split": split, "reference": t.reference_id, "target": t.target_id, "category": t.category,
            "captions": t.relative_captions, "changed": {k: list(v) for k, v in t.changed_attributes.items()},
            **extra}


def write_triplets_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write triplet rows (see :func:`triplet_row`) atomically, sorted keys: same rows, same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_jsonl(path, rows)
    return path


def read_triplets_jsonl(path: str | os.PathLike, item_ids: set[str] | None = None,
                        split: str | None = None) -> list[TripletRecord]:
    """Triplets of a JSONL file in the format of ``triplets.jsonl``; with ``item_ids``, a reference
    or target outside it raises :class:`DatasetFormatError` naming the line's ids; ``split`` keeps
    only rows of that split."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, "a triplet JSONL file (a catalogue's triplets.jsonl, or one written by "
                                         "`unifashion triplets mine`)")
    triplets = []
    for row in _read_jsonl(path, ("reference", "target", "captions")):
        if split is not None and row.get("split") != split:
            continue
        for key in ("reference", "target"):
            if item_ids is not None and row[key] not in item_ids:
                raise DatasetFormatError(path, f"triplet {key} {row[key]!r} is not in items.jsonl")
        if not isinstance(row["captions"], list) or not all(isinstance(c, str) for c in row["captions"]):
            raise DatasetFormatError(path, f"triplet {row['reference']}->{row['target']}: captions must be a "
                                           f"list of strings")
        triplets.append(TripletRecord(reference_id=row["reference"], target_id=row["target"],
                                      relative_captions=list(row["captions"]), category=row.get("category", ""),
                                      changed_attributes={k: tuple(v) for k, v in row.get("changed", {}).items()}))
    return triplets


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise DatasetNotFoundError(path, "build it with `unifashion data build`")
    rows = []
    for lineno, row in iter_jsonl(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise DatasetFormatError(path, f"line {lineno} lacks the field(s) {missing}")
        rows.append(row)
    return rows


def load_catalogue(root: str | os.PathLike) -> Catalogue:
    """Open a catalogue written by :func:`build_catalogue_files`."""
    root = Path(root)
    meta_path = root / "catalogue.json"
    if not meta_path.is_file():
        raise DatasetNotFoundError(meta_path, "not a built catalogue; run `unifashion data build`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        config = CatalogueConfig.from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DatasetFormatError(meta_path, f"unreadable catalogue metadata ({exc})") from exc
    items = [CatalogueItem(r["id"], r["split"], r["attributes"], r["captions"], r["seed"], r.get("group", -1))
             for r in _read_jsonl(root / "items.jsonl", ("id", "split", "attributes", "captions", "seed"))]
    triplets = read_triplets_jsonl(root / "triplets.jsonl", {it.item_id for it in items})
    return Catalogue(config=config, items=items, triplets=triplets, root=root)
