"""Retrieval on a shopper's wording: queries the catalogue's caption templates never use.

The embedded catalogue's captions come from templates (:mod:`unifashion.data.synthetic.captions`),
so a model can score well on them by fitting the templates' words. A shopper writes "crimson
polka-dot frock" or "do you have any tartan trousers in charcoal?". This protocol asks for the
same (category, colour, pattern) twice: once in the templates' own words ("red polka dot dress")
and once in a shopper's wording written here, apart from the templates: other words for every
colour, pattern and garment, inside sentence frames a person would type. For each query it
scores every item of the split (text -> image) and reports:

* ``P@10``: the share of the top 10 items that have all three asked-for attributes, averaged
  over queries (a query asks only for triples the split holds);
* ``category@1``, ``colour@1``, ``pattern@1``: how often the top item has each attribute.

The gap between the template and the shopper rows is what the wording costs. Only the items'
attributes are used; light/dark shades count as their colour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from unifashion.data.records import ItemRecord
from unifashion.data.synthetic.captions import CATEGORY_NOUN, PATTERN_ADJECTIVE
from unifashion.evaluation.results import ResultTable

PROTOCOL = "shopper phrasing (text->image, all items of the split)"

# Words the caption templates never use for these attributes (checked by the tests against the
# templates' vocabulary).
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("jet black", "ebony", "coal black"),
    "white": ("ivory", "snow white", "off white"),
    "grey": ("gray", "charcoal", "slate"),
    "navy": ("midnight blue", "deep navy", "marine"),
    "blue": ("cobalt", "royal blue", "sapphire"),
    "teal": ("turquoise", "aqua", "petrol"),
    "green": ("emerald", "kelly green", "grass green"),
    "olive": ("khaki", "army green", "moss"),
    "yellow": ("mustard", "lemon", "canary"),
    "orange": ("tangerine", "pumpkin", "rust orange"),
    "red": ("crimson", "scarlet", "cherry"),
    "pink": ("rose", "fuchsia", "blush"),
    "purple": ("violet", "plum", "lilac"),
    "brown": ("chocolate", "tan", "coffee"),
    "beige": ("cream", "camel", "sand"),
}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("unpatterned", "single colour", "block colour"),
    "stripes": ("pinstripe", "stripy", "banded"),
    "dots": ("spotted", "dotty", "speckled"),
    "floral": ("flowery", "botanical print", "flower patterned"),
    "plaid": ("tartan", "gingham", "houndstooth"),
    "text": ("slogan", "lettering", "wordmark"),
}
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "dress": ("frock", "gown", "sundress"),
    "shirt": ("blouse", "button-down", "button up"),
    "toptee": ("tee", "t-shirt", "tank"),
    "skirt": ("skort", "midi skirt", "wrap skirt"),
    "pants": ("trousers", "slacks", "jeans"),
}
FRAMES = (
    "looking for a {pattern} {colour} {category}",
    "do you have any {category} in {colour}, {pattern} please",
    "{colour} {category} with a {pattern} look",
    "i want a {pattern} {category}, ideally {colour}",
    "show me {colour} {pattern} {category}",
    "need a {category} that is {colour} and {pattern}",
)


@dataclass(frozen=True)
class PhrasedQuery:
    text: str
    category: str
    colour: str
    pattern: str
    wording: str  # "template" or "shopper"


def template_query(category: str, colour: str, pattern: str) -> str:
    """The (category, colour, pattern) in the caption templates' own words."""
    return " ".join(w for w in (colour, PATTERN_ADJECTIVE[pattern], CATEGORY_NOUN[category]) if w)


def phrasing_queries(items: Sequence[ItemRecord], seed: int = 0) -> list[PhrasedQuery]:
    """One template and one shopper query for every (category, colour, pattern) the items hold."""
    rng = np.random.default_rng(seed)
    triples = sorted({(r.attributes["category"], r.attributes["colour"], r.attributes["pattern"]) for r in items})
    queries = []
    for category, colour, pattern in triples:
        queries.append(PhrasedQuery(template_query(category, colour, pattern), category, colour, pattern, "template"))
        frame = FRAMES[int(rng.integers(len(FRAMES)))]
        text = frame.format(colour=rng.choice(COLOUR_WORDS[colour]), pattern=rng.choice(PATTERN_WORDS[pattern]),
                            category=rng.choice(CATEGORY_WORDS[category]))
        queries.append(PhrasedQuery(text, category, colour, pattern, "shopper"))
    return queries


def phrasing_metrics(similarity: np.ndarray, queries: Sequence[PhrasedQuery], items: Sequence[ItemRecord],
                     k: int = 10) -> dict[str, dict[str, float]]:
    """``{wording: {metric: percent}}`` from ``similarity`` (queries x items, higher is better)."""
    if similarity.shape != (len(queries), len(items)):
        raise ValueError(f"similarity is {similarity.shape}, expected ({len(queries)}, {len(items)})")
    attrs = {name: np.array([r.attributes[name] for r in items]) for name in ("category", "colour", "pattern")}
    order = np.argsort(-similarity, axis=1, kind="stable")
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for row, query in enumerate(queries):
        top = order[row, :k]
        hits = {name: attrs[name][top] == getattr(query, name) for name in attrs}
        all_three = hits["category"] & hits["colour"] & hits["pattern"]
        out = sums.setdefault(query.wording, {f"P@{k}": 0.0, "category@1": 0.0, "colour@1": 0.0, "pattern@1": 0.0})
        out[f"P@{k}"] += float(all_three.mean())
        for name in attrs:
            out[f"{name}@1"] += float(hits[name][0])
        counts[query.wording] = counts.get(query.wording, 0) + 1
    return {w: {m: 100.0 * v / counts[w] for m, v in ms.items()} for w, ms in sums.items()}


def evaluate_phrasing(score_texts: Callable[[list[str]], np.ndarray], items: Sequence[ItemRecord],
                      table: ResultTable, method: str, split: str, seed: int = 0) -> None:
    """Add the protocol's rows for ``method``; ``score_texts(texts)`` gives texts x items scores."""
    queries = phrasing_queries(items, seed)
    metrics = phrasing_metrics(score_texts([q.text for q in queries]), queries, items)
    for wording, values in metrics.items():
        for metric, value in values.items():
            table.add("phrasing", f"{PROTOCOL}, {wording} wording", method, metric, value, split, seed)
