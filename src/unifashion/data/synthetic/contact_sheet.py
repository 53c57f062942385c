"""A contact sheet of the embedded catalogue: items with their captions, and some CIR triplets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unifashion.data.records import load_image
from unifashion.data.synthetic.catalogue import Catalogue
from unifashion.visualize import item_grid, save_png, stack, triplet_rows


def _image(catalogue: Catalogue, item_id: str):
    path = catalogue.image_path(item_id)
    return load_image(path) if path is not None and path.is_file() else catalogue.render(item_id)


def catalogue_contact_sheet(catalogue: Catalogue, path: str | Path, n_items: int = 18, n_triplets: int = 4,
                            style: str = "short", seed: int = 0) -> Path:
    """Write a PNG of ``n_items`` items (one per category in turn) and ``n_triplets`` triplets."""
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list] = {}
    for item in catalogue.items:
        by_cat.setdefault(item.category, []).append(item)
    chosen = []
    cats = sorted(by_cat)
    for i in range(min(n_items, len(catalogue.items))):
        pool = by_cat[cats[i % len(cats)]]
        chosen.append(pool[int(rng.integers(len(pool)))])
    grid = item_grid([_image(catalogue, it.item_id) for it in chosen], [it.captions[style] for it in chosen],
                     title=f"Embedded catalogue: {len(catalogue.items)} items ({style} captions)")
    picks = rng.choice(len(catalogue.triplets), size=min(n_triplets, len(catalogue.triplets)), replace=False)
    rows = []
    for k in picks:
        t = catalogue.triplets[int(k)]
        rows.append((_image(catalogue, t.reference_id), t.relative_captions, _image(catalogue, t.target_id)))
    trip = triplet_rows(rows, title=f"CIR triplets: {len(catalogue.triplets)} in all")
    return save_png(stack([grid, trip]), path)
