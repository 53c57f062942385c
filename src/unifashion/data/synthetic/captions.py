"""Captions of the embedded catalogue in the paper's three FIC styles.

- ``short``: a Fashion200K-like product title, e.g. "light blue striped long sleeve shirt".
- ``professional``: a FashionGen-like product description of several sentences.
- ``detailed``: a Fashion-IQ-cap-like sentence naming every visible attribute.

The wording varies by a seed (the item's), so a captioner cannot learn one fixed template, but
every attribute of the item is always stated.
"""

from __future__ import annotations

import numpy as np

from unifashion.data.synthetic.attributes import ACHROMATIC

PATTERN_ADJECTIVE = {
    "solid": "", "stripes": "striped", "dots": "polka dot", "floral": "floral",
    "plaid": "plaid", "text": "graphic",
}
PATTERN_NOUN = {
    "stripes": "stripes", "dots": "polka dots", "floral": "a floral print", "plaid": "a plaid check",
    "text": "a printed logo", "solid": "no pattern",
}
SLEEVE_PHRASE = {"sleeveless": "sleeveless", "short": "short sleeve", "long": "long sleeve"}
CATEGORY_NOUN = {"dress": "dress", "shirt": "shirt", "toptee": "top", "skirt": "skirt", "pants": "pants"}
NECKLINE_PHRASE = {"round": "round neck", "v-neck": "v-neck", "square": "square neckline",
                   "collar": "collar"}
LENGTH_PHRASE = {
    ("dress", "mini"): "mini", ("dress", "knee"): "knee length", ("dress", "maxi"): "maxi",
    ("skirt", "mini"): "mini", ("skirt", "knee"): "knee length", ("skirt", "maxi"): "maxi",
    ("shirt", "cropped"): "cropped", ("shirt", "regular"): "", ("shirt", "long"): "longline",
    ("toptee", "cropped"): "cropped", ("toptee", "regular"): "", ("toptee", "long"): "longline",
    ("pants", "shorts"): "", ("pants", "cropped"): "cropped", ("pants", "full"): "full length",
}


def article(word: str) -> str:
    """'an' before a vowel sound ('an olive print'), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def colour_phrase(attrs: dict) -> str:
    """'light blue', 'navy', 'dark red': the colour with its lightness when it has one."""
    colour, lightness = attrs["colour"], attrs["lightness"]
    if colour in ACHROMATIC or lightness == "medium":
        return colour
    return f"{lightness} {colour}"


def category_noun(attrs: dict) -> str:
    if attrs["category"] == "pants" and attrs["length"] == "shorts":
        return "shorts"
    return CATEGORY_NOUN[attrs["category"]]


def short_caption(attrs: dict) -> str:
    """A product title: colour, pattern, sleeve, length, fit, category."""
    words = [colour_phrase(attrs), PATTERN_ADJECTIVE[attrs["pattern"]]]
    if "sleeve" in attrs:
        words.append(SLEEVE_PHRASE[attrs["sleeve"]])
    words.append(LENGTH_PHRASE[(attrs["category"], attrs["length"])])
    words.append("fitted" if attrs["fit"] == "tight" else "loose")
    words.append(category_noun(attrs))
    return " ".join(w for w in words if w)


PRO_PATTERN = {"stripes": "Stripes", "dots": "Polka dots", "floral": "Floral print",
               "plaid": "Plaid check", "text": "Printed logo"}
DETAILED_PATTERN = {"stripes": "{c} stripes", "dots": "{c} polka dots", "floral": "{a} {c} floral print",
                    "plaid": "{a} {c} plaid check", "text": "{a} {c} printed logo"}
LENGTH_WORDS = {"mini": "mini length", "knee": "knee length", "maxi": "maxi length", "cropped": "cropped",
                "regular": "regular length", "long": "longline", "shorts": "short length",
                "full": "full length"}


def professional_caption(attrs: dict, seed: int = 0) -> str:
    """A FashionGen-like description: a headline sentence, then one sentence per detail."""
    rng = np.random.default_rng(seed)
    noun = category_noun(attrs)
    fabric = ["cotton", "jersey", "poplin", "crepe", "twill", "linen-blend"][int(rng.integers(6))]
    sleeve = f"{SLEEVE_PHRASE[attrs['sleeve']]} " if "sleeve" in attrs else ""
    sentences = [f"{sleeve}{fabric} {noun} in {colour_phrase(attrs)}.".capitalize()]
    if attrs["pattern"] != "solid":
        placement = "at chest" if attrs["pattern"] == "text" else "throughout"
        sentences.append(f"{PRO_PATTERN[attrs['pattern']]} in {attrs['pattern_colour']} {placement}.")
    details = []
    if "neckline" in attrs:
        details.append(f"{NECKLINE_PHRASE[attrs['neckline']].capitalize()}.")
    if attrs["category"] == "shirt":
        details.append("Button closure at front.")
    details.append(f"{LENGTH_WORDS[attrs['length']].capitalize()}.")
    details.append("Slim fit." if attrs["fit"] == "tight" else "Relaxed fit.")
    rng.shuffle(details)
    return " ".join(sentences + details)


def detailed_caption(attrs: dict, seed: int = 0) -> str:
    """A Fashion-IQ-cap-like sentence: 'a dark red dress with white stripes, short sleeves, ...'."""
    rng = np.random.default_rng(seed + 1)
    noun = category_noun(attrs)
    plural = attrs["category"] == "pants"
    solid = "solid " if attrs["pattern"] == "solid" else ""
    first = f"{solid}{colour_phrase(attrs)}"
    head = f"{'' if plural else article(first) + ' '}{first} {noun}"
    parts = []
    if attrs["pattern"] != "solid":
        pc = attrs["pattern_colour"]
        parts.append(DETAILED_PATTERN[attrs["pattern"]].format(a=article(pc), c=pc))
    rest = []
    if "sleeve" in attrs:
        rest.append({"sleeveless": "no sleeves", "short": "short sleeves", "long": "long sleeves"}[
            attrs["sleeve"]])
    if "neckline" in attrs:
        rest.append(f"a {NECKLINE_PHRASE[attrs['neckline']]}")
    rest.append("a tight fit" if attrs["fit"] == "tight" else "a loose fit")
    parts += [rest[i] for i in rng.permutation(len(rest))]
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
    return f"{head} with {listed}, {LENGTH_WORDS[attrs['length']]}"
def captions_for(attrs: dict, seed: int = 0) -> dict[str, str]:
    """All three caption styles of an item."""
    return {
        "short": short_caption(attrs),
        "professional": professional_caption(attrs, seed),
        "detailed": detailed_caption(attrs, seed),
    }
