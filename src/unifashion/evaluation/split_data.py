"""The data of one evaluation split: its items and triplets (:class:`SplitData`), images read
when a task needs them (:class:`LazyImages`), products for de-duplication, and the CIR groups of
the Fashion-IQ protocols."""

from __future__ import annotations

from collections.abc import Sequence

from unifashion.data.fashion_iq import protocol_gallery_ids, protocol_queries
from unifashion.data.records import product_of
from unifashion.data.synthetic.catalogue import Catalogue


class LazyImages:
    """The split's images as a sequence, each read from its record when asked for (nothing kept)."""

    def __init__(self, items: Sequence):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [r.load_image() for r in self.items[key]]
        return self.items[key].load_image()

    def __iter__(self):
        return (r.load_image() for r in self.items)


class SplitData:
    """The split's items and triplets; images are read when a task needs them."""

    def __init__(self, catalogue: Catalogue | None, split: str, items: Sequence | None = None,
                 triplets: Sequence | None = None):
        if catalogue is not None:
            items, triplets = catalogue.item_records(split), catalogue.triplet_records(split)
        self.items = list(items or [])
        if not self.items:
            raise ValueError(f"no items in split {split!r}")
        self.triplets = list(triplets or [])
        self.split = split
        self.ids = [r.item_id for r in self.items]
        self.index = {i: k for k, i in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise ValueError(f"split {split!r} lists an item id twice")
        self.images = LazyImages(self.items)
        self.categories = [r.category for r in self.items]
        # An item's product (FashionGen has several photos per product; other items are their own).
        self.products = [product_of(r) for r in self.items]
        self.deduplicated_from: int | None = None  # images before first_image_per_product, if applied

    def first_image_per_product(self) -> SplitData:
        """The split with only the first image of each product (FashionGen's several photos of one
        product; a split whose products are all distinct is returned as it is). Triplets that name a
        dropped image are dropped too."""
        if len(set(self.products)) == len(self.products):
            return self
        first: dict[str, int] = {}
        for k, product in enumerate(self.products):
            first.setdefault(product, k)
        kept = [self.items[k] for k in sorted(first.values())]
        ids = {r.item_id for r in kept}
        triplets = [t for t in self.triplets if t.reference_id in ids and t.target_id in ids]
        data = SplitData.from_records(kept, triplets, self.split)
        data.deduplicated_from = len(self.items)
        return data

    def product_note(self) -> str:
        """How several images of one product were treated, for the protocol names."""
        n_products = len(set(self.products))
        if self.deduplicated_from is not None:
            return (f"de-duplicated by product id: first image of each of {n_products} products "
                    f"({self.deduplicated_from} images)")
        if n_products == len(self.products):
            return "one image per product"
        return (f"{len(self.products)} images of {n_products} products; the same product's other images "
                "count as positives")

    @classmethod
    def from_records(cls, items: Sequence, triplets: Sequence, split: str) -> SplitData:
        """A split of any source (see :mod:`unifashion.data.spec`)."""
        return cls(None, split, items, triplets)

    @classmethod
    def from_fashion_iq(cls, root: str, split: str = "val", image_dir: str | None = None,
                        image_extension: str = "png") -> SplitData:
        """Fashion-IQ's three categories (``captions/``, ``image_splits/``, images). Shirt and
        toptee share some image ids, so item ids here are ``category/id``; each category's items
        are that split's whole image list, and :meth:`cir_groups` picks the protocol's gallery."""
        from dataclasses import replace as with_fields

        from unifashion.data.fashion_iq import load_fashion_iq

        items, triplets = [], []
        for cat, part in load_fashion_iq(root, split, image_dir=image_dir, image_extension=image_extension).items():
            items += [with_fields(r, item_id=f"{cat}/{r.item_id}") for r in part.gallery]
            triplets += [with_fields(t, reference_id=f"{cat}/{t.reference_id}", target_id=f"{cat}/{t.target_id}")
                         for t in part.triplets]
        return cls.from_records(items, triplets, split)

    def cir_groups(self, gallery: str = "split", caption_join: str = "and",
                   ) -> dict[str, tuple[list[int], list[int], list[str], list[int]]]:
        """Per category: gallery indices, reference indices, texts, target positions in the gallery.

        ``gallery``: ``"split"`` (every item of the category: Fashion-IQ's original protocol) or
        ``"references-and-targets"`` (the VAL protocol); ``caption_join``: ``"and"`` (one query per
        triplet) or ``"each"`` (one per relative caption). See :mod:`unifashion.data.fashion_iq`."""
        groups: dict[str, tuple[list[int], list[int], list[str], list[int]]] = {}
        for cat in sorted(set(self.categories)):
            trips = [t for t in self.triplets if t.category == cat]
            if not trips:
                continue
            members = [k for k, c in enumerate(self.categories) if c == cat]
            wanted = set(protocol_gallery_ids([self.ids[k] for k in members], trips, gallery))
            members = [k for k in members if self.ids[k] in wanted]
            pos = {g: j for j, g in enumerate(members)}
            queries = protocol_queries(trips, caption_join)
            groups[cat] = (members, [self.index[r] for r, _, _ in queries], [text for _, text, _ in queries],
                           [pos[self.index[t]] for _, _, t in queries])
        return groups
