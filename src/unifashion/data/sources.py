"""One entry point over every supported dataset format: read it and summarise what is there.

``unifashion data check FORMAT PATH`` uses this to tell a user, before any training, whether a
dataset is where they think it is and in the layout the loaders expect.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

FORMATS = ("embedded", "fashion-mnist", "fashion-iq", "fashiongen", "fashion200k", "viton")


def describe_source(fmt: str, path: str | Path, split: str | None = None) -> dict:
    """Load ``path`` as ``fmt`` and return counts (items, triplets, categories) as a dict."""
    path = Path(path)
    if fmt == "embedded":
        from unifashion.data.synthetic.catalogue import load_catalogue

        catalogue = load_catalogue(path)
        items = catalogue.item_records(split)
        return {"format": fmt, "path": str(path), "split": split or "all", "items": len(items),
                "triplets": len(catalogue.triplet_records(split)),
                "categories": dict(Counter(i.category for i in items))}
    if fmt == "fashion-mnist":
        from unifashion.data.fashion_mnist import class_name, load_fashion_mnist

        data = load_fashion_mnist(path, split or "train")
        return {"format": fmt, "path": str(path), "split": data.split, "images": int(len(data.labels)),
                "image_shape": list(data.images.shape[1:]),
                "classes": {class_name(int(k)): int(v) for k, v in sorted(Counter(data.labels.tolist()).items())}}
    if fmt == "fashion-iq":
        from unifashion.data.fashion_iq import load_fashion_iq

        parts = load_fashion_iq(path, split=split or "val")
        return {"format": fmt, "path": str(path), "split": split or "val",
                "categories": {c: {"gallery": len(p.gallery), "triplets": len(p.triplets)} for c, p in parts.items()}}
    if fmt == "fashiongen":
        from unifashion.data.fashiongen import load_fashiongen

        items = load_fashiongen(path)
        return {"format": fmt, "path": str(path), "items": len(items),
                "categories": dict(Counter(i.category for i in items).most_common(20))}
    if fmt == "fashion200k":
        from unifashion.data.fashion200k import load_fashion200k

        items = load_fashion200k(path, split=split or "train")
        return {"format": fmt, "path": str(path), "split": split or "train", "items": len(items),
                "categories": dict(Counter(i.category for i in items))}
    if fmt == "viton":
        from unifashion.data.viton import load_viton

        records = load_viton(path, split=split or "test")
        return {"format": fmt, "path": str(path), "split": split or "test", "pairs": len(records),
                "with_sketch": sum(r.sketch is not None for r in records),
                "with_text": sum(bool(r.text) for r in records)}
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of {list(FORMATS)}")
