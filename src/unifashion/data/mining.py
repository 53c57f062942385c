"""Mining attribute-aware CIR triplets from images that have no triplet annotations.

The recipe of "Exploring Multi-Modal Large Language Models and Two-Stage Fine-Tuning for Fashion
Image Retrieval" (2026; only its summary was at hand) has a multimodal LLM (LLaVA) describe
catalogue images and turns the descriptions into training triplets. Here our own captioner
(UniFashion's ``caption(..., style="detailed")``) stands in for LLaVA:

1. **caption** every image in the detailed style (the model runs in
   :func:`unifashion.pipelines.mining.caption_collection`; this module is the data side: parsing,
   pairing, filtering, precision, and needs no model);
2. **parse** each caption back into attributes (:func:`parse_detailed_caption`, the inverse of
   :func:`unifashion.data.synthetic.captions.detailed_caption`'s grammar);
3. **pair** images of the same category whose parsed attributes differ in 1 to 3 editable
   attributes (the catalogue's own edit sizes), counted as :func:`edit_names` counts them;
4. **write** two Fashion-IQ-style relative captions per pair with the annotated triplets' own
   wording (:func:`unifashion.data.synthetic.triplets.relative_captions`);
5. **filter** (each filter's count goes into the report):

   - ``unparsed``: the caption does not follow the grammar, or names a value outside the
     vocabulary (e.g. sleeves on a skirt, "light" black);
   - ``implausible``: a pattern in the garment's own colour (invisible, so the caption
     contradicts itself);
   - ``low_agreement``: the model's own ITC score of (image, its caption) is in the lowest
     ``agreement_quantile`` of the collection: the captioner itself doubts that caption;
   - ``pair_disagreement`` (with ``pair_agreement``): each image of a pair must score higher with
     its own caption than with the other's; otherwise the model cannot see the stated difference
     in the pixels, and the relative caption is likely describing caption noise;
   - ``duplicate``: items whose captions parse to identical attributes are the same item in the
     captioner's eyes; a relative caption cannot tell them apart, so only the best-agreeing one
     is kept (otherwise every pair into the group would carry false negatives);
   - ``unverified_edit`` (with ``verify_edits``): for each stated edit, the target image must
     score its own caption above the same caption with that one attribute set back to the
     reference's value, and the reference image likewise the other way round (captions written
     canonically, so only the attribute differs). An edit the captioner cannot see in the pixels
     is likely its own error: this is the filter that removes most wrong claims;
   - ``same_pair``: a candidate pair already in ``exclude_pairs`` (e.g. the annotated triplets,
     when mined and annotated sets are combined); a pair is never mined twice.

Category changes are not mined: Fashion-IQ's triplets stay within a category, our length values
are category-specific, and the relative-caption grammar has no wording for a category change.

:func:`mining_precision` measures the mined captions against ground-truth attributes (the
embedded catalogue has them): per attribute and overall.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from unifashion.data.errors import DatasetNotFoundError
from unifashion.data.folder import METADATA_FILE_NAMES, load_item_records
from unifashion.data.records import ItemRecord, TripletRecord
from unifashion.data.synthetic.attributes import CATEGORIES, validate_attributes
from unifashion.data.synthetic.captions import LENGTH_WORDS, colour_phrase
from unifashion.data.synthetic.triplets import N_CHANGES_PROBS, changed_attributes, relative_captions

#: Image file suffixes read from a plain folder of images (no metadata file).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

_NOUN_CATEGORY = {"dress": "dress", "shirt": "shirt", "top": "toptee", "skirt": "skirt", "pants": "pants",
                  "shorts": "pants"}
_PATTERN_NOUNS = {"stripes": "stripes", "polka dots": "dots", "floral print": "floral", "plaid check": "plaid",
                  "printed logo": "text"}
_PATTERN_PART = re.compile(r"^(?:an? )?([a-z]+) (" + "|".join(_PATTERN_NOUNS) + r")$")
_PHRASE_VALUES = {
    "no sleeves": ("sleeve", "sleeveless"), "short sleeves": ("sleeve", "short"), "long sleeves": ("sleeve", "long"),
    "a round neck": ("neckline", "round"), "a v-neck": ("neckline", "v-neck"),
    "a square neckline": ("neckline", "square"), "a collar": ("neckline", "collar"),
    "a tight fit": ("fit", "tight"), "a loose fit": ("fit", "loose"),
}


class CaptionParseError(ValueError):
    """A caption that does not read as the detailed style's grammar; the message says where."""


def parse_detailed_caption(text: str) -> dict:
    """Attributes stated by a detailed-style caption, e.g. ``"a light blue shirt with white
    stripes, long sleeves, a collar and a tight fit, cropped"``.

    Raises :class:`CaptionParseError` naming the first part that does not parse, and for
    attribute sets the vocabulary does not allow (checked by ``validate_attributes``).
    """
    s = " ".join(text.strip().lower().rstrip(".").split())
    body, sep, length_words = s.rpartition(", ")
    if not sep:
        raise CaptionParseError(f"no ', <length>' at the end of {text!r}")
    head, sep, listed = body.partition(" with ")
    if not sep:
        raise CaptionParseError(f"no ' with ' after the garment in {text!r}")
    words = head.split()
    if words and words[0] in ("a", "an"):
        words = words[1:]
    solid = bool(words) and words[0] == "solid"
    if solid:
        words = words[1:]
    if len(words) not in (2, 3) or words[-1] not in _NOUN_CATEGORY:
        raise CaptionParseError(f"cannot read '[light|dark] <colour> <garment>' in {head!r}")
    noun = words[-1]
    attrs: dict = {"category": _NOUN_CATEGORY[noun], "colour": words[-2],
                   "lightness": words[0] if len(words) == 3 else "medium"}
    if len(words) == 3 and words[0] not in ("light", "dark"):
        raise CaptionParseError(f"{words[0]!r} is not a lightness in {head!r}")
    for part in re.split(r", | and ", listed):
        match = _PATTERN_PART.match(part)
        if match:
            key, value = "pattern", _PATTERN_NOUNS[match.group(2)]
            attrs["pattern_colour"] = match.group(1)
        elif part in _PHRASE_VALUES:
            key, value = _PHRASE_VALUES[part]
        else:
            raise CaptionParseError(f"unknown phrase {part!r} in {text!r}")
        if key in attrs:
            raise CaptionParseError(f"{key} is stated twice in {text!r}")
        attrs[key] = value
    if "pattern" not in attrs:
        attrs["pattern"] = "solid"
    elif solid:
        raise CaptionParseError(f"'solid' and a {attrs['pattern']} pattern in {text!r}")
    lengths = CATEGORIES[attrs["category"]]["lengths"]
    by_words = {LENGTH_WORDS[v]: v for v in lengths}
    if length_words not in by_words:
        raise CaptionParseError(f"{length_words!r} is not a {attrs['category']} length ({sorted(by_words)})")
    attrs["length"] = by_words[length_words]
    if (noun == "shorts") != (attrs["length"] == "shorts"):
        raise CaptionParseError(f"the garment {noun!r} contradicts the length {length_words!r}")
    spec = CATEGORIES[attrs["category"]]
    for key, allowed in (("sleeve", spec["sleeves"]), ("neckline", spec["neckline"])):
        if key in attrs and not allowed:
            raise CaptionParseError(f"a {attrs['category']} has no {key}, but {text!r} states one")
    try:
        validate_attributes(attrs)
    except ValueError as exc:
        raise CaptionParseError(f"{exc} (in {text!r})") from exc
    return attrs


def edit_names(reference: dict, target: dict) -> list[str]:
    """The edits from ``reference`` to ``target`` as the relative captions name them: a changed
    pattern colour counts as a pattern edit, and a colour edit includes its lightness."""
    changed = changed_attributes(reference, target)
    names = [n for n in changed if n not in ("pattern_colour", "category")]
    if "pattern_colour" in changed and "pattern" not in names:
        names.append("pattern")
    if "lightness" in names and "colour" in names:
        names.remove("lightness")
    return names


def with_value(attrs: dict, name: str, source: dict) -> dict:
    """``attrs`` with attribute ``name`` taken from ``source`` (a colour with its lightness, a
    pattern with its colour)."""
    out = dict(attrs)
    keys = {"colour": ("colour", "lightness"), "pattern": ("pattern", "pattern_colour")}.get(name, (name,))
    for key in keys:
        if key in source:
            out[key] = source[key]
        else:
            out.pop(key, None)
    return out


def attribute_value(attrs: dict, name: str):
    """The value a relative caption states for an edit of ``name`` (colour with its lightness;
    a pattern with its colour)."""
    if name == "colour":
        return colour_phrase(attrs)
    if name == "pattern":
        return (attrs["pattern"], attrs.get("pattern_colour"))
    return attrs.get(name)


@dataclass
class MiningConfig:
    """How pairs are made and filtered; see the module docstring for each filter."""

    min_changes: int = 1
    max_changes: int = 3
    targets_per_reference: int = 2
    agreement_quantile: float = 0.2  # drop this lowest fraction by image-caption ITC score; 0: off
    pair_agreement: bool = True  # keep a pair only if each image prefers its own caption (needs pair scores)
    verify_edits: bool = True  # keep a pair only if every stated edit is visible to the model (needs a verifier)
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.min_changes <= self.max_changes:
            raise ValueError(f"need 1 <= min_changes <= max_changes, got {self.min_changes}, {self.max_changes}")
        if self.targets_per_reference < 1:
            raise ValueError(f"targets_per_reference must be at least 1, got {self.targets_per_reference}")
        if not 0.0 <= self.agreement_quantile < 1.0:
            raise ValueError(f"agreement_quantile must be in [0, 1), got {self.agreement_quantile}")


@dataclass
class MiningResult:
    triplets: list[TripletRecord]
    attributes: dict[str, dict]  # item id -> parsed attributes, for the items that passed the filters
    counts: dict[str, int] = field(default_factory=dict)  # images and triplets dropped by each filter
    config: MiningConfig = field(default_factory=MiningConfig)

    def report(self) -> dict:
        return {"config": asdict(self.config), "counts": dict(self.counts), "triplets": len(self.triplets)}


def mine_triplets(captions: dict[str, str], agreement: dict[str, float] | None = None,
                  config: MiningConfig | None = None,
                  exclude_pairs: set[tuple[str, str]] | None = None,
                  pair_score: Callable[[str, str], float] | None = None,
                  edit_verifier: Callable[[list[tuple[str, dict, str, dict]]], list[bool]] | None = None
                  ) -> MiningResult:
    """Mine triplets from ``captions`` (item id -> detailed caption, in a fixed order).

    ``agreement`` (item id -> the model's image-caption score) enables the low-agreement filter;
    ``pair_score(image_id, caption_id)`` (the score of one item's image against another item's
    caption) enables the pair filter; ``edit_verifier`` (a list of (reference id, attributes,
    target id, attributes) -> a keep flag each, e.g.
    :meth:`unifashion.pipelines.mining.CaptionScorer.verify_edits`) the edit filter. Deterministic
    for a given input and ``config.seed``.
    """
    config = config or MiningConfig()
    counts: Counter = Counter(images=len(captions))
    parsed: dict[str, dict] = {}
    for item_id, text in captions.items():
        try:
            attrs = parse_detailed_caption(text)
        except CaptionParseError:
            counts["unparsed"] += 1
            continue
        if attrs["pattern"] != "solid" and attrs["pattern_colour"] == attrs["colour"]:
            counts["implausible"] += 1
            continue
        parsed[item_id] = attrs
    if agreement is not None and config.agreement_quantile > 0 and parsed:
        missing = [i for i in parsed if i not in agreement]
        if missing:
            raise KeyError(f"no agreement score for items {missing[:5]}")
        threshold = float(np.quantile([agreement[i] for i in parsed], config.agreement_quantile))
        kept = {i: a for i, a in parsed.items() if agreement[i] >= threshold}
        counts["low_agreement"] = len(parsed) - len(kept)
        parsed = kept
    # One item per distinct attribute set: the best-agreeing one (the first, without scores).
    by_signature: dict[tuple, str] = {}
    for item_id, attrs in parsed.items():
        sig = tuple(sorted(attrs.items()))
        best = by_signature.get(sig)
        if best is None or (agreement is not None and agreement[item_id] > agreement[best]):
            by_signature[sig] = item_id
    counts["duplicate"] = len(parsed) - len(by_signature)
    keep = set(by_signature.values())
    parsed = {i: a for i, a in parsed.items() if i in keep}
    counts["images_kept"] = len(parsed)

    rng = np.random.default_rng(config.seed)
    by_category: dict[str, list[str]] = defaultdict(list)
    for item_id, attrs in parsed.items():
        by_category[attrs["category"]].append(item_id)
    excluded = set(exclude_pairs or ())
    drawn: list[tuple[str, str, str]] = []  # (category, reference, target)
    for category in sorted(by_category):
        ids = by_category[category]
        for ref_id in ids:
            ref = parsed[ref_id]
            buckets: dict[int, list[str]] = defaultdict(list)  # edit size -> candidate targets
            for tgt_id in ids:
                if tgt_id != ref_id:
                    n = len(edit_names(ref, parsed[tgt_id]))
                    if config.min_changes <= n <= config.max_changes:
                        if (ref_id, tgt_id) in excluded:
                            counts["same_pair"] += 1  # a candidate, but already a triplet elsewhere
                            continue
                        buckets[n].append(tgt_id)
            for _ in range(config.targets_per_reference):
                sizes = sorted(n for n, b in buckets.items() if b)
                if not sizes:
                    break
                # Edit sizes as often as in the annotated set (N_CHANGES_PROBS), then a target uniformly.
                p = np.array([N_CHANGES_PROBS.get(n, min(N_CHANGES_PROBS.values())) for n in sizes])
                bucket = buckets[sizes[int(rng.choice(len(sizes), p=p / p.sum()))]]
                drawn.append((category, ref_id, bucket.pop(int(rng.integers(len(bucket))))))
    counts["pairs_drawn"] = len(drawn)
    if pair_score is not None and config.pair_agreement:
        agreeing = [(c, r, t) for c, r, t in drawn if pair_score(r, r) > pair_score(r, t)
                    and pair_score(t, t) > pair_score(t, r)]
        counts["pair_disagreement"] = len(drawn) - len(agreeing)
        drawn = agreeing
    if edit_verifier is not None and config.verify_edits and drawn:
        keep = edit_verifier([(r, parsed[r], t, parsed[t]) for _, r, t in drawn])
        counts["unverified_edit"] = len(drawn) - sum(keep)
        drawn = [d for d, k in zip(drawn, keep, strict=True) if k]
    triplets = [TripletRecord(reference_id=r, target_id=t, category=c,
                              relative_captions=relative_captions(parsed[r], parsed[t], rng),
                              changed_attributes=changed_attributes(parsed[r], parsed[t])) for c, r, t in drawn]
    counts["triplets"] = len(triplets)
    return MiningResult(triplets=triplets, attributes=parsed, counts=dict(counts), config=config)


def mining_precision(triplets: Sequence[TripletRecord], mined_attributes: dict[str, dict],
                     true_attributes: dict[str, dict]) -> dict:
    """How right the mined relative captions are, against ground-truth attributes.

    Each mined triplet claims edits (:func:`edit_names` of the parsed reference and target) and
    states each edit's target value. A claim is correct when the ground truth changes that
    attribute too and its target value is the stated one (colour with lightness; pattern with
    its colour). Returns ``claim_precision`` per attribute and overall (micro-averaged),
    ``triplet_precision`` (every claim correct and no true change left unsaid: the caption is
    exactly right), and ``caption_accuracy`` per attribute (parsed vs. true, over mined items).
    """
    per_attr: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # correct, claimed
    exact = 0
    for t in triplets:
        ref, tgt = mined_attributes[t.reference_id], mined_attributes[t.target_id]
        true_ref, true_tgt = true_attributes[t.reference_id], true_attributes[t.target_id]
        claims = edit_names(ref, tgt)
        true_changes = set(edit_names(true_ref, true_tgt))
        all_right = set(claims) == true_changes
        for name in claims:
            ok = name in true_changes and attribute_value(true_tgt, name) == attribute_value(tgt, name)
            per_attr[name][0] += int(ok)
            per_attr[name][1] += 1
            all_right &= ok
        exact += int(all_right)
    correct = sum(c for c, _ in per_attr.values())
    claimed = sum(n for _, n in per_attr.values())
    accuracy: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item_id in {i for t in triplets for i in (t.reference_id, t.target_id)}:
        mined, truth = mined_attributes[item_id], true_attributes[item_id]
        for name in ("category", "colour", "lightness", "pattern", "sleeve", "length", "fit", "neckline"):
            if name in truth:
                accuracy[name][0] += int(attribute_value(mined, name) == attribute_value(truth, name))
                accuracy[name][1] += 1
    return {
        "triplets": len(triplets),
        "claims": claimed,
        "claim_precision": {"overall": 100.0 * correct / claimed if claimed else float("nan"),
                            **{k: 100.0 * c / n for k, (c, n) in sorted(per_attr.items())}},
        "claims_per_attribute": {k: n for k, (_, n) in sorted(per_attr.items())},
        "triplet_precision": 100.0 * exact / len(triplets) if triplets else float("nan"),
        "caption_accuracy": {k: 100.0 * c / n for k, (c, n) in sorted(accuracy.items())},
    }


# ------------------------------------------------------------------------- reading and captioning
def collection_records(source: str | os.PathLike, split: str | None = None) -> list[ItemRecord]:
    """Items of an image collection: an embedded catalogue folder (optionally one split), an image
    folder with a metadata file (as ``unifashion index`` reads), or a plain folder of images (ids
    are the file paths relative to the folder, without suffix)."""
    path = Path(source)
    plain_folder = path.is_dir() and not (path / "catalogue.json").is_file() and not any(
        (path / name).is_file() for name in METADATA_FILE_NAMES)
    if not plain_folder:
        return load_item_records(path, split)
    if split is not None:
        raise ValueError(f"split={split!r} only applies to an embedded catalogue folder; {path} is not one")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetNotFoundError(path, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return [ItemRecord(item_id=str(p.relative_to(path).with_suffix("")), image=p.resolve(), source=str(path))
            for p in files]
