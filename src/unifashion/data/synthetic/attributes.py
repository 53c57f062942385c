"""The attribute vocabulary of the embedded synthetic catalogue.

Every attribute here is drawn into the pixels by :mod:`unifashion.data.synthetic.render`, described by the
three caption styles in :mod:`unifashion.data.synthetic.captions`, and edited by the CIR triplets in
:mod:`unifashion.data.synthetic.triplets`.
"""

from __future__ import annotations

#: Named colours, as sRGB at medium lightness. Near pairs (navy/black, beige/white) are kept on
#: purpose: real catalogues have them and retrieval models confuse them.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (242, 242, 238),
    "grey": (128, 128, 132),
    "navy": (30, 40, 92),
    "blue": (40, 96, 200),
    "teal": (20, 128, 128),
    "green": (40, 140, 60),
    "olive": (110, 120, 40),
    "yellow": (236, 200, 40),
    "orange": (236, 120, 30),
    "red": (200, 30, 40),
    "pink": (236, 120, 170),
    "purple": (120, 50, 150),
    "brown": (110, 70, 40),
    "beige": (220, 200, 160),
}

#: Colours that have no light/dark variants (their lightness is always "medium").
ACHROMATIC = ("black", "white", "grey")

#: Lightness levels and the blend applied to a chromatic colour: toward white (> 0) or black (< 0).
LIGHTNESS: dict[str, float] = {"light": 0.45, "medium": 0.0, "dark": -0.45}

PATTERNS = ("solid", "stripes", "dots", "floral", "plaid", "text")

SLEEVES = ("sleeveless", "short", "long")  # ordered: shortest to longest

FITS = ("tight", "loose")  # ordered: tightest to loosest

NECKLINES = ("round", "v-neck", "square", "collar")

#: Per category: which attributes apply, and its length values ordered shortest to longest.
CATEGORIES: dict[str, dict] = {
    "dress": {"lengths": ("mini", "knee", "maxi"), "sleeves": True, "neckline": True},
    "shirt": {"lengths": ("cropped", "regular", "long"), "sleeves": True, "neckline": True},
    "toptee": {"lengths": ("cropped", "regular", "long"), "sleeves": True, "neckline": True},
    "skirt": {"lengths": ("mini", "knee", "maxi"), "sleeves": False, "neckline": False},
    "pants": {"lengths": ("shorts", "cropped", "full"), "sleeves": False, "neckline": False},
}

#: The attributes a CIR edit may change, in the order captions mention them.
EDITABLE = ("colour", "lightness", "pattern", "sleeve", "length", "fit", "neckline")


def shade(colour: str, lightness: str) -> tuple[int, int, int]:
    """The RGB of ``colour`` at ``lightness`` (achromatic colours ignore lightness)."""
    r, g, b = COLOURS[colour]
    amount = 0.0 if colour in ACHROMATIC else LIGHTNESS[lightness]
    target = 255 if amount > 0 else 0
    a = abs(amount)
    return tuple(int(round(c + (target - c) * a)) for c in (r, g, b))  # type: ignore[return-value]


def contrast_colours(colour: str) -> list[str]:
    """Colours that read well as a pattern on ``colour`` (not the colour itself, not a near twin)."""
    near = {
        "black": {"navy", "brown"}, "navy": {"black", "blue"}, "white": {"beige", "yellow"},
        "beige": {"white", "yellow"}, "blue": {"navy", "teal"}, "teal": {"blue", "green"},
        "green": {"olive", "teal"}, "olive": {"green", "brown"}, "red": {"orange", "pink"},
        "pink": {"red", "purple"}, "orange": {"red", "yellow"}, "yellow": {"orange", "beige"},
        "purple": {"pink", "navy"}, "brown": {"black", "olive"}, "grey": set(),
    }[colour]
    return [c for c in COLOURS if c != colour and c not in near]


def validate_attributes(attrs: dict) -> None:
    """Raise ``ValueError`` naming the first attribute that is unknown or out of vocabulary."""
    category = attrs.get("category")
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {sorted(CATEGORIES)}")
    spec = CATEGORIES[category]
    checks = {
        "colour": COLOURS, "lightness": LIGHTNESS, "pattern": PATTERNS,
        "fit": FITS, "length": spec["lengths"],
    }
    if spec["sleeves"]:
        checks["sleeve"] = SLEEVES
    if spec["neckline"]:
        checks["neckline"] = NECKLINES
    for key, vocab in checks.items():
        if attrs.get(key) not in vocab:
            raise ValueError(f"attribute {key}={attrs.get(key)!r} is not one of {list(vocab)}")
    if attrs["pattern"] != "solid" and attrs.get("pattern_colour") not in COLOURS:
        raise ValueError(f"pattern {attrs['pattern']!r} needs a pattern_colour from the named colours")
    if attrs["colour"] in ACHROMATIC and attrs["lightness"] != "medium":
        raise ValueError(f"{attrs['colour']} has no {attrs['lightness']} variant; use lightness 'medium'")
