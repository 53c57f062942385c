"""Composed-retrieval triplets for the embedded catalogue: attribute edits and their captions.

A triplet takes a reference item, changes 1 to 3 of its attributes to make the target, and says
what changed in two relative captions phrased like Fashion-IQ's ("is darker and has longer
sleeves", "is red with white stripes"). Each edit has several phrasings, chosen by the seed, and
the two captions are worded independently, so no single template can be memorised. Together the
two captions mention every changed attribute and nothing else.
"""

from __future__ import annotations

import numpy as np

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
from unifashion.data.synthetic.captions import category_noun, colour_phrase

#: How many attributes an edit changes, and how often.
N_CHANGES_PROBS = {1: 0.5, 2: 0.35, 3: 0.15}


def editable_attributes(attrs: dict) -> list[str]:
    """The attributes that an edit of this item may change."""
    spec = CATEGORIES[attrs["category"]]
    names = ["colour", "pattern", "length", "fit"]
    if attrs["colour"] not in ACHROMATIC:
        names.append("lightness")
    if spec["sleeves"]:
        names.append("sleeve")
    if spec["neckline"]:
        names.append("neckline")
    return names


def _other(values, old, rng):
    choices = [v for v in values if v != old]
    return choices[int(rng.integers(len(choices)))]


def apply_edit(attrs: dict, names: list[str], rng: np.random.Generator) -> dict:
    """A copy of ``attrs`` with each attribute in ``names`` changed to another valid value.

    A colour edit may also change lightness (it names the new colour in full, e.g. "light pink");
    a pattern colour always stays readable against the garment colour.
    """
    new = dict(attrs)
    for name in names:
        if name == "colour":
            options = [c for c in COLOURS if c != attrs["colour"]]
            if new["pattern"] != "solid":
                options = [c for c in options if new["pattern_colour"] in contrast_colours(c)]
            new["colour"] = options[int(rng.integers(len(options)))]
            if new["colour"] in ACHROMATIC:
                new["lightness"] = "medium"
            elif "lightness" not in names:
                new["lightness"] = list(LIGHTNESS)[int(rng.integers(len(LIGHTNESS)))]
        elif name == "lightness":
            new["lightness"] = _other(list(LIGHTNESS), attrs["lightness"], rng)
        elif name == "pattern":
            new["pattern"] = _other(PATTERNS, attrs["pattern"], rng)
            if new["pattern"] == "solid":
                new.pop("pattern_colour", None)
            else:
                options = contrast_colours(new["colour"])
                keep = attrs.get("pattern_colour")
                new["pattern_colour"] = keep if keep in options and rng.random() < 0.5 else options[
                    int(rng.integers(len(options)))]
        elif name == "sleeve":
            new["sleeve"] = _other(SLEEVES, attrs["sleeve"], rng)
        elif name == "length":
            new["length"] = _other(CATEGORIES[attrs["category"]]["lengths"], attrs["length"], rng)
        elif name == "fit":
            new["fit"] = _other(FITS, attrs["fit"], rng)
        elif name == "neckline":
            new["neckline"] = _other(NECKLINES, attrs["neckline"], rng)
        else:
            raise ValueError(f"attribute {name!r} cannot be edited")
    return new


def changed_attributes(reference: dict, target: dict) -> dict[str, tuple]:
    """{attribute: (reference value, target value)} for every attribute that differs."""
    keys = sorted(set(reference) | set(target))
    return {k: (reference.get(k), target.get(k)) for k in keys if reference.get(k) != target.get(k)}


# -- phrasing ------------------------------------------------------------------------------------

_PATTERN_PHRASES = {
    "solid": ["is solid", "has no pattern", "is plain", "is a solid color", "has no print"],
    "stripes": ["has stripes", "is striped", "has {pc} stripes", "has {pc} horizontal stripes"],
    "dots": ["has polka dots", "is dotted", "has {pc} dots", "has {pc} polka dots"],
    "floral": ["has a floral print", "is floral", "has flowers on it", "has a {pc} flower pattern"],
    "plaid": ["is plaid", "has a checkered pattern", "is checked", "has a {pc} plaid pattern"],
    "text": ["has a logo", "has text on it", "has a graphic print", "has writing on the front",
             "has a {pc} logo"],
}
_PATTERN_WITH = {"stripes": "{pc} stripes", "dots": "{pc} dots", "floral": "{pc} flowers",
                 "plaid": "{pc} checks", "text": "a {pc} logo"}
_FIT_PHRASES = {
    "tight": ["is tighter", "is more fitted", "is form fitting", "is slimmer", "is tight fitting"],
    "loose": ["is looser", "is baggier", "is loose fitting", "is more relaxed", "is oversized"],
}
_NECK_PHRASES = {
    "round": ["has a round neck", "has a crew neck", "has a rounded neckline"],
    "v-neck": ["has a v-neck", "has a v neckline", "is v-necked"],
    "square": ["has a square neckline", "has a square neck"],
    "collar": ["has a collar", "is collared"],
}


def _pick(rng, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _colour_phrases(ref: dict, tgt: dict) -> list[str]:
    cp, old = colour_phrase(tgt), colour_phrase(ref)
    out = [f"is {cp}", f"is {cp} instead of {old}", f"is a {cp} color", f"is in {cp}", f"has a {cp} color",
           f"is {cp} colored"]
    if tgt["pattern"] == "solid":
        out.append(f"is solid {cp}")
    return out


def _lightness_phrases(ref: dict, tgt: dict) -> list[str]:
    order = list(LIGHTNESS)  # light, medium, dark
    darker = order.index(tgt["lightness"]) > order.index(ref["lightness"])
    word = "darker" if darker else "lighter"
    out = [f"is {word}", f"is a {word} shade", f"has a {word} color", f"is {word} in color"]
    if tgt["lightness"] != "medium":
        out.append(f"is {colour_phrase(tgt)}")  # "is dark green" names the shade; plain "is green" would not
    return out


def _sleeve_phrases(ref: dict, tgt: dict) -> list[str]:
    longer = SLEEVES.index(tgt["sleeve"]) > SLEEVES.index(ref["sleeve"])
    out = ["has longer sleeves" if longer else "has shorter sleeves"]
    out += {"sleeveless": ["is sleeveless", "has no sleeves"],
            "short": ["has short sleeves", "is short sleeved"],
            "long": ["has long sleeves", "is long sleeved"]}[tgt["sleeve"]]
    if ref["sleeve"] == "sleeveless":
        out.append("has sleeves")
    return out


def _length_phrases(ref: dict, tgt: dict) -> list[str]:
    lengths = CATEGORIES[tgt["category"]]["lengths"]
    step = lengths.index(tgt["length"]) - lengths.index(ref["length"])
    verb = "are" if tgt["category"] == "pants" else "is"
    out = [f"{verb} longer" if step > 0 else f"{verb} shorter"]
    if abs(step) == 2:
        out.append(f"{verb} much longer" if step > 0 else f"{verb} much shorter")
    noun = category_noun(tgt)
    out += {
        "mini": [f"is a mini {noun}", "is above the knee"], "knee": ["is knee length"],
        "maxi": [f"is a maxi {noun}", "is floor length"], "cropped": [f"{verb} cropped"],
        "regular": ["is regular length"], "long": ["is longline", "is a longer cut"],
        "shorts": ["are shorts"], "full": ["are full length", "are long pants"],
    }[tgt["length"]]
    return out


def _neck_phrases(ref: dict, tgt: dict) -> list[str]:
    out = list(_NECK_PHRASES[tgt["neckline"]])
    if ref["neckline"] == "collar":
        out.append(f"has no collar and {out[0]}")
    return out


def phrase_edit(ref: dict, tgt: dict, names: list[str], rng: np.random.Generator) -> str:
    """One Fashion-IQ-style relative caption mentioning exactly the attributes in ``names``."""
    names = [n for n in ("colour", "lightness", "pattern", "sleeve", "length", "fit", "neckline") if n in names]
    phrases: list[str] = []
    pc = tgt.get("pattern_colour", "")
    if "colour" in names and "pattern" in names and rng.random() < 0.5:
        # The mixture Fashion-IQ annotators write most: "is red with white stripes".
        cp = colour_phrase(tgt)
        phrases.append(f"is solid {cp}" if tgt["pattern"] == "solid"
                       else f"is {cp} with {_PATTERN_WITH[tgt['pattern']].format(pc=pc)}")
        names = [n for n in names if n not in ("colour", "pattern")]
    for name in names:
        if name == "colour":
            phrases.append(_pick(rng, _colour_phrases(ref, tgt)))
        elif name == "lightness":
            phrases.append(_pick(rng, _lightness_phrases(ref, tgt)))
        elif name == "pattern":
            options = list(_PATTERN_PHRASES[tgt["pattern"]])
            if tgt["pattern"] == "solid" and ref["pattern"] == "text":
                options += ["has no logo", "has no text"]
            phrases.append(_pick(rng, options).format(pc=pc))
        elif name == "sleeve":
            phrases.append(_pick(rng, _sleeve_phrases(ref, tgt)))
        elif name == "length":
            phrases.append(_pick(rng, _length_phrases(ref, tgt)))
        elif name == "fit":
            phrases.append(_pick(rng, _FIT_PHRASES[tgt["fit"]]))
        elif name == "neckline":
            phrases.append(_pick(rng, _neck_phrases(ref, tgt)))
    order = rng.permutation(len(phrases))
    phrases = [phrases[i] for i in order]
    text = phrases[0]
    for p in phrases[1:]:
        joiner = _pick(rng, [" and ", ", ", " and "])
        if p.startswith("has ") and rng.random() < 0.3:
            joiner, p = " with ", p[4:]
        text += joiner + p
    if text.startswith("is ") and rng.random() < 0.2:
        text = text[3:]  # annotators often drop the verb: "darker and longer"
    return text


def relative_captions(ref: dict, tgt: dict, rng: np.random.Generator) -> list[str]:
    """Two captions: the first mentions every change, the second a non-empty subset of them."""
    changed = changed_attributes(ref, tgt)
    names = [n for n in changed if n != "pattern_colour"]
    if "pattern_colour" in changed and "pattern" not in names:
        names.append("pattern")  # only the pattern's colour changed: say the pattern anew
    if "lightness" in names and "colour" in names:
        names.remove("lightness")  # the colour phrase ("light pink") already says it
    first = phrase_edit(ref, tgt, names, rng)
    k = int(rng.integers(1, len(names) + 1))
    subset = [names[i] for i in sorted(rng.choice(len(names), size=k, replace=False))]
    second = phrase_edit(ref, tgt, subset, rng)
    return [first, second]


def sample_edit(attrs: dict, rng: np.random.Generator) -> tuple[dict, list[str]]:
    """Pick 1-3 attributes of ``attrs`` and change them; return the target and the names picked."""
    counts = list(N_CHANGES_PROBS)
    n = int(rng.choice(counts, p=[N_CHANGES_PROBS[c] for c in counts]))
    options = editable_attributes(attrs)
    names = [options[i] for i in rng.choice(len(options), size=min(n, len(options)), replace=False)]
    if "colour" in names and "lightness" in names:
        names.remove("lightness")
    return apply_edit(attrs, names, rng), names
