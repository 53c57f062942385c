"""Fashion-MNIST (Xiao et al., 2017): 70,000 real 28x28 grey product photos in 10 classes.

Reading. The standard idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ``.gz``) from any folder;
by default from where Debian's ``dataset-fashion-mnist`` package installs them
(:data:`DEFAULT_FASHION_MNIST_DIR`). Magic numbers, dimensions and payload sizes are checked, so
a truncated or mixed-up file fails with :class:`DatasetFormatError` naming it.

Transforms. The photos are grey, so they carry category and shape but no colour or pattern. The
seeded transforms below add both, to make real-shape data for the colour/pattern-sensitive tasks:

- :func:`recolour_garment` turns one grey image into an RGB product photo: it is upscaled
  (bicubic, default 128 px), the garment is cut out where the grey level is above the black
  background (a soft mask, so edges stay anti-aliased), its fabric is filled with a named colour
  and optionally a pattern (drawn by :func:`unifashion.data.synthetic.render.fill_pattern`, in a pattern
  colour that contrasts with the fabric), and the original grey level becomes the shading: a
  pixel's brightness relative to the garment's brightest pixels scales the fabric from
  :data:`SHADE_FLOOR` to 1, which keeps the photo's seams, folds and prints visible. The
  background is the embedded catalogue's light grey.
- :func:`make_cmr_items` (CMR pairs): one recoloured item per grey image, with captions in the
  three styles and attributes {category, colour, pattern, pattern_colour}.
- :func:`make_cir_triplets` (CIR triplets): a reference item and a target that differs in one
  attribute: recoloured (same photo, another colour), re-patterned (same photo, another
  pattern) or another category (a photo of another class, same colour and pattern), with two
  Fashion-IQ-like relative captions ("is red", "has stripes", "is a sneaker instead").

Items are rendered when their ``image`` is read (:class:`FashionMNISTItem`), so 70,000 items
cost only their 28x28 sources in memory. The same (image index, colour, pattern, pattern colour,
size) always renders the same pixels and has the same ``item_id``, across CMR and CIR sets.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.records import ItemRecord, TripletRecord
from unifashion.data.synthetic.attributes import COLOURS, PATTERNS, contrast_colours
from unifashion.data.synthetic.captions import DETAILED_PATTERN, PATTERN_ADJECTIVE, PATTERN_NOUN, PRO_PATTERN, article
from unifashion.data.synthetic.render import BACKGROUND, fill_pattern

#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files (gzipped).
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (
    "install Debian's package with `apt-get install dataset-fashion-mnist`, "
    "or pass the folder that holds the idx files"
)

#: The official class names, by label.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: The noun each class is called in captions and in the ``category`` attribute, by label.
CATEGORY_NOUNS = (
    "t-shirt", "trousers", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
#: Classes named as a pair in captions ("a pair of red trousers").
PAIR_NOUNS = {"trousers"}

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
SPLIT_PREFIXES = {"train": "train", "test": "t10k", "t10k": "t10k"}

#: Brightness of the garment's darkest shading, as a fraction of the fabric colour.
SHADE_FLOOR = 0.55
#: Grey level (0-255, after upscaling) at which a pixel counts fully as garment.
MASK_FULL_AT = 16.0


# ----------------------------------------------------------------------------- reading


@dataclass
class FashionMNISTSplit:
    """The images (N, 28, 28) uint8 and labels (N,) uint8 of one split."""

    split: str
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def class_name(label: int) -> str:
    """The official class name of ``label`` (0-9)."""
    return FASHION_MNIST_CLASSES[int(label)]


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except EOFError as exc:
        raise DatasetFormatError(path, f"truncated gzip stream ({exc})") from exc
    except gzip.BadGzipFile as exc:
        raise DatasetFormatError(path, f"not a gzip file ({exc})") from exc


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Read an idx file of unsigned bytes (plain or .gz), checking its magic number and sizes.

    The idx format: a big-endian uint32 magic (0x0000080D, D = number of dimensions), D
    big-endian uint32 sizes, then the data. A wrong magic, a short header, fewer data bytes
    than the sizes promise (a truncated file) or extra bytes raise :class:`DatasetFormatError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, INSTALL_HINT)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetFormatError(path, f"truncated: {len(data)} bytes, too short for the idx magic number")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DatasetFormatError(
            path, f"wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(an idx file of unsigned bytes with {expected_magic & 0xFF} dimension(s))"
        )
    n_dims = magic & 0xFF
    header_size = 4 + 4 * n_dims
    if len(data) < header_size:
        raise DatasetFormatError(path, f"truncated: {len(data)} bytes, shorter than its {header_size}-byte header")
    shape = struct.unpack(f">{n_dims}I", data[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(data) - header_size
    if found < expected:
        raise DatasetFormatError(
            path, f"truncated: the header promises {expected} data bytes for shape {shape}, found {found}"
        )
    if found > expected:
        raise DatasetFormatError(path, f"{found - expected} unexpected bytes after the data of shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def find_idx_file(root: str | Path, name: str) -> Path:
    """``{root}/{name}`` or ``{root}/{name}.gz``, whichever exists (plain first)."""
    root = Path(root)
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(root / f"{name}.gz", f"neither {name} nor {name}.gz is there; {INSTALL_HINT}")


def fashion_mnist_installed(root: str | Path | None = None, split: str = "train") -> bool:
    """Whether the idx files of ``split`` are under ``root`` (default :data:`DEFAULT_FASHION_MNIST_DIR`).

    Fashion-MNIST is optional wherever a first run touches it (``make demo``): Debian's package
    needs root, so a new user may not have it; callers skip its pairs and say how to get it.
    """
    root = Path(root) if root is not None else DEFAULT_FASHION_MNIST_DIR
    prefix = SPLIT_PREFIXES.get(split)
    if prefix is None or not root.is_dir():
        return False
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    return all((root / n).is_file() or (root / f"{n}.gz").is_file() for n in names)


def load_fashion_mnist(root: str | Path | None = None, split: str = "train") -> FashionMNISTSplit:
    """Images and labels of ``split`` ("train": 60,000; "test" or "t10k": 10,000).

    ``root`` defaults to :data:`DEFAULT_FASHION_MNIST_DIR`. Labels must be 0-9 and as many as
    the images; images must be 28x28.
    """
    if split not in SPLIT_PREFIXES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected 'train' or 'test'")
    root = Path(root) if root is not None else DEFAULT_FASHION_MNIST_DIR
    if not root.is_dir():
        raise DatasetNotFoundError(root, INSTALL_HINT)
    prefix = SPLIT_PREFIXES[split]
    images_path = find_idx_file(root, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DatasetFormatError(images_path, f"expected 28x28 images, got {images.shape[1]}x{images.shape[2]}")
    if len(labels) != len(images):
        raise DatasetFormatError(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}")
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DatasetFormatError(labels_path, f"label {int(labels.max())} is out of range 0-9")
    return FashionMNISTSplit("test" if prefix == "t10k" else "train", images, labels)


# ----------------------------------------------------------------------------- recolouring


@dataclass(frozen=True)
class Recolouring:
    """How a grey image becomes a colour product photo.

    ``pattern_colour`` is required for any pattern but "solid"; ``seed`` sets the pattern's
    phase (and the logo word of "text") and nothing else.
    """

    colour: str
    pattern: str = "solid"
    pattern_colour: str | None = None
    size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {list(COLOURS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected one of {list(PATTERNS)}")
        if self.pattern != "solid" and self.pattern_colour not in COLOURS:
            raise ValueError(f"pattern {self.pattern!r} needs a pattern_colour from {list(COLOURS)}")
        if self.size < 28:
            raise ValueError(f"size must be at least 28 pixels, got {self.size}")


def recolour_garment(grey: np.ndarray, recolouring: Recolouring) -> Image.Image:
    """Turn a grey (28, 28) uint8 garment on black into an RGB product photo (see module doc)."""
    size = recolouring.size
    upscaled = Image.fromarray(np.asarray(grey, dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    level = np.asarray(upscaled, dtype=np.float32)
    alpha = np.clip(level / MASK_FULL_AT, 0.0, 1.0)[..., None]
    inside = level[level > MASK_FULL_AT]
    brightest = float(np.percentile(inside, 99)) if inside.size else 255.0
    shading = SHADE_FLOOR + (1.0 - SHADE_FLOOR) * np.clip(level / max(brightest, 1.0), 0.0, 1.0)

    pattern_rgb = COLOURS[recolouring.pattern_colour] if recolouring.pattern != "solid" else None
    fabric = fill_pattern(
        size, size, recolouring.pattern, COLOURS[recolouring.colour], pattern_rgb,
        seed=recolouring.seed, logo_box=_logo_box(level > MASK_FULL_AT),
    )
    garment = np.asarray(fabric, dtype=np.float32) * shading[..., None]
    background = np.array(BACKGROUND, dtype=np.float32)
    image = background * (1.0 - alpha) + garment * alpha
    return Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8), "RGB")


def _logo_box(mask: np.ndarray) -> tuple[float, float, float] | None:
    """Centre and size of a logo that fits the garment: at the mask's centroid, 40% of its extent."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    extent = min(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    return float(xs.mean()), float(ys.mean()), 0.4 * float(extent)


class FashionMNISTItem(ItemRecord):
    """An :class:`ItemRecord` whose ``image`` is rendered from its grey source when read.

    ``image`` is a property returning a PIL RGB image, so ``record.load_image()`` and
    ``load_image(record.image)`` both work; it cannot be assigned.
    """

    def __init__(self, *, grey: np.ndarray, recolouring: Recolouring, **fields: Any):
        self.grey = grey
        self.recolouring = recolouring
        super().__init__(image=None, **fields)

    @property
    def image(self) -> Image.Image:  # type: ignore[override]
        return recolour_garment(self.grey, self.recolouring)

    @image.setter
    def image(self, value: Any) -> None:
        # ItemRecord.__init__ assigns image=None; any real assignment would be silently lost.
        if value is not None:
            raise AttributeError("the image of a Fashion-MNIST item is rendered from its recolouring")

    def __repr__(self) -> str:
        return f"FashionMNISTItem(item_id={self.item_id!r}, recolouring={self.recolouring!r})"


# ----------------------------------------------------------------------------- captions


def _pattern_phrase(pattern: str, pattern_colour: str) -> str:
    """'white stripes', 'an orange floral print'."""
    return DETAILED_PATTERN[pattern].format(a=article(pattern_colour), c=pattern_colour)


def _noun_phrase(noun: str, adjectives: str = "") -> str:
    """'a red t-shirt', 'an olive coat', 'a pair of red trousers'."""
    words = f"{adjectives} {noun}".strip()
    if noun in PAIR_NOUNS:
        return f"a pair of {words}"
    return f"{article(words)} {words}"


def item_captions(attributes: dict[str, Any]) -> dict[str, str]:
    """The three caption styles of a recoloured item, from {category, colour, pattern, pattern_colour}.

    - short (Fashion200K-like title): "red striped t-shirt";
    - professional (FashionGen-like): "T-shirt in red. Stripes in white throughout.";
    - detailed (Fashion-IQ-cap-like): "a red t-shirt with white stripes".
    """
    noun, colour, pattern = attributes["category"], attributes["colour"], attributes["pattern"]
    short = " ".join(w for w in (colour, PATTERN_ADJECTIVE[pattern], noun) if w)
    professional = f"{noun.capitalize()} in {colour}."
    if pattern == "solid":
        professional += " Solid colour throughout."
        detailed = _noun_phrase(noun, f"solid {colour}")
    else:
        placement = "at front" if pattern == "text" else "throughout"
        professional += f" {PRO_PATTERN[pattern]} in {attributes['pattern_colour']} {placement}."
        drawn = _pattern_phrase(pattern, attributes["pattern_colour"])
        detailed = f"{_noun_phrase(noun, colour)} with {drawn}"
    return {"short": short, "professional": professional, "detailed": detailed}


def _colour_change_captions(old: str, new: str, rng: np.random.Generator) -> list[str]:
    templates = [f"is {new}", f"is {new} instead of {old}", f"is {new} in colour", f"has a {new} colour",
                 f"is {new} not {old}", f"{new} colour"]
    return _pick_two(templates, rng)


def _pattern_change_captions(old: dict, new: dict, rng: np.random.Generator) -> list[str]:
    if new["pattern"] == "solid":
        templates = [f"is solid {new['colour']}", "has no pattern", "is plain", "is a solid colour",
                     f"has no {PATTERN_NOUN[old['pattern']].removeprefix('a ')}"]
    else:
        drawn = _pattern_phrase(new["pattern"], new["pattern_colour"])
        was = "being plain" if old["pattern"] == "solid" else PATTERN_NOUN[old["pattern"]]
        templates = [f"has {PATTERN_NOUN[new['pattern']]}", f"has {drawn}", f"has {drawn} instead of {was}"]
        if new["pattern"] in ("stripes", "floral", "plaid"):
            templates.append(f"is {PATTERN_ADJECTIVE[new['pattern']]}")
    return _pick_two(templates, rng)


def _category_change_captions(old: str, new: str, rng: np.random.Generator) -> list[str]:
    templates = [f"is {_noun_phrase(new)} instead", f"is {_noun_phrase(new)} instead of {_noun_phrase(old)}",
                 f"is {_noun_phrase(new)}", f"should be {_noun_phrase(new)}", f"{_noun_phrase(new)} in the same colour"]
    return _pick_two(templates, rng)


def _pick_two(templates: list[str], rng: np.random.Generator) -> list[str]:
    """Two different phrasings, as Fashion-IQ's two annotators give two captions per pair."""
    first, second = rng.choice(len(templates), size=2, replace=False)
    return [templates[int(first)], templates[int(second)]]


# ----------------------------------------------------------------------------- CMR items and CIR triplets


def make_item(
    data: FashionMNISTSplit,
    index: int,
    colour: str,
    pattern: str = "solid",
    pattern_colour: str | None = None,
    size: int = 128,
) -> FashionMNISTItem:
    """The recoloured item of image ``index``; its id and pixels depend only on these arguments.

    The pattern's phase is seeded by ``index``, so the same photo in the same colour and pattern
    is the same item wherever it appears.
    """
    label = int(data.labels[index])
    noun = CATEGORY_NOUNS[label]
    pattern_colour = pattern_colour if pattern != "solid" else None
    recolouring = Recolouring(colour, pattern, pattern_colour, size=size, seed=int(index))
    attributes = {"category": noun, "colour": colour, "pattern": pattern, "pattern_colour": pattern_colour,
                  "label": label, "index": int(index)}
    item_id = f"fmnist-{data.split}-{index:05d}-{colour}-{pattern}" + (f"-{pattern_colour}" if pattern_colour else "")
    return FashionMNISTItem(
        grey=data.images[index],
        recolouring=recolouring,
        item_id=item_id,
        category=noun,
        captions=item_captions(attributes),
        attributes=attributes,
        source="fashion-mnist",
    )


def _check_choices(colours: Sequence[str], patterns: Sequence[str]) -> None:
    unknown = [c for c in colours if c not in COLOURS] + [p for p in patterns if p not in PATTERNS]
    if unknown:
        raise ValueError(
            f"unknown colour(s)/pattern(s) {unknown}; colours: {list(COLOURS)}, patterns: {list(PATTERNS)}"
        )
    if not colours or not patterns:
        raise ValueError("colours and patterns must not be empty")


def _sample_look(
    rng: np.random.Generator, colours: Sequence[str], patterns: Sequence[str], pattern_probability: float
) -> tuple[str, str, str | None]:
    """A (colour, pattern, pattern colour): solid with probability 1 - ``pattern_probability``."""
    colour = str(rng.choice(list(colours)))
    patterned = [p for p in patterns if p != "solid"]
    if patterned and (rng.random() < pattern_probability or "solid" not in patterns):
        pattern = str(rng.choice(patterned))
        return colour, pattern, str(rng.choice(contrast_colours(colour)))
    return colour, "solid", None


def make_cmr_items(
    data: FashionMNISTSplit,
    size: int = 128,
    colours: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    pattern_probability: float = 0.5,
    seed: int = 0,
    limit: int | None = None,
) -> list[FashionMNISTItem]:
    """One recoloured item per image (the first ``limit`` images if given), for CMR and FIC.

    Each image gets a colour drawn uniformly from ``colours`` (default: every named colour) and,
    with probability ``pattern_probability``, a pattern from ``patterns`` (default: all) in a
    colour that contrasts with it (drawn from the whole named palette, whatever ``colours`` is);
    otherwise it stays solid. The draws depend only on ``seed``.
    """
    colours = list(colours) if colours is not None else list(COLOURS)
    patterns = list(patterns) if patterns is not None else list(PATTERNS)
    _check_choices(colours, patterns)
    rng = np.random.default_rng(seed)
    n = len(data) if limit is None else min(limit, len(data))
    items = []
    for index in range(n):
        colour, pattern, pattern_colour = _sample_look(rng, colours, patterns, pattern_probability)
        items.append(make_item(data, index, colour, pattern, pattern_colour, size))
    return items


CHANGES = ("colour", "pattern", "category")


def make_cir_triplets(
    data: FashionMNISTSplit,
    n_triplets: int,
    size: int = 128,
    colours: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    changes: Sequence[str] = CHANGES,
    pattern_probability: float = 0.5,
    seed: int = 0,
) -> tuple[list[FashionMNISTItem], list[TripletRecord]]:
    """``n_triplets`` CIR triplets and the gallery of every item they use (no duplicates).

    Each triplet draws a reference (a random image with a look drawn as in
    :func:`make_cmr_items`) and one change, uniformly from ``changes``:

    - ``colour``: the same photo in another colour (one in which the pattern colour still
      contrasts), e.g. "is red";
    - ``pattern``: the same photo with another pattern (or plain), e.g. "has stripes";
    - ``category``: a random photo of another class in the same colour and pattern,
      e.g. "is a sneaker instead".

    ``changed_attributes`` maps each attribute that differs to (reference value, target value).
    """
    colours = list(colours) if colours is not None else list(COLOURS)
    patterns = list(patterns) if patterns is not None else list(PATTERNS)
    _check_choices(colours, patterns)
    unknown = [c for c in changes if c not in CHANGES]
    if unknown or not changes:
        raise ValueError(f"changes must be a non-empty subset of {CHANGES}, got {list(changes)}")
    if "colour" in changes and len(colours) < 2:
        raise ValueError("a colour change needs at least two colours")
    if "pattern" in changes and len(patterns) < 2:
        raise ValueError("a pattern change needs at least two patterns")
    by_label = {label: np.flatnonzero(data.labels == label) for label in range(len(FASHION_MNIST_CLASSES))}
    present = [label for label, indices in by_label.items() if len(indices)]
    if "category" in changes and len(present) < 2:
        raise ValueError("a category change needs images of at least two classes")

    rng = np.random.default_rng(seed)
    gallery: dict[str, FashionMNISTItem] = {}
    triplets: list[TripletRecord] = []
    for _ in range(n_triplets):
        index = int(rng.integers(len(data)))
        colour, pattern, pattern_colour = _sample_look(rng, colours, patterns, pattern_probability)
        reference = make_item(data, index, colour, pattern, pattern_colour, size)
        old = reference.attributes
        change = str(rng.choice(list(changes)))
        if change == "colour":
            keeps_pattern = [
                c for c in colours
                if c != colour and (pattern_colour is None or pattern_colour in contrast_colours(c))
            ]
            new_colour = str(rng.choice(keeps_pattern or [c for c in colours if c != colour]))
            captions = _colour_change_captions(colour, new_colour, rng)
            new_pattern_colour = pattern_colour
            if not keeps_pattern:
                # A small palette may leave no colour on which the pattern still shows:
                # recolour the pattern too, and say so.
                new_pattern_colour = str(rng.choice(contrast_colours(new_colour)))
                captions[1] = f"has {_pattern_phrase(pattern, new_pattern_colour)}"
            target = make_item(data, index, new_colour, pattern, new_pattern_colour, size)
        elif change == "pattern":
            new_pattern = str(rng.choice([p for p in patterns if p != pattern]))
            new_pattern_colour = None
            if new_pattern != "solid":
                new_pattern_colour = pattern_colour or str(rng.choice(contrast_colours(colour)))
            target = make_item(data, index, colour, new_pattern, new_pattern_colour, size)
            captions = _pattern_change_captions(old, target.attributes, rng)
        else:
            label = int(data.labels[index])
            new_label = int(rng.choice([other for other in present if other != label]))
            other_index = int(rng.choice(by_label[new_label]))
            target = make_item(data, other_index, colour, pattern, pattern_colour, size)
            captions = _category_change_captions(CATEGORY_NOUNS[label], CATEGORY_NOUNS[new_label], rng)
        changed = {
            key: (old[key], target.attributes[key])
            for key in ("category", "colour", "pattern", "pattern_colour")
            if old[key] != target.attributes[key]
        }
        gallery.setdefault(reference.item_id, reference)
        gallery.setdefault(target.item_id, target)
        triplets.append(
            TripletRecord(
                reference_id=reference.item_id,
                target_id=target.item_id,
                relative_captions=captions,
                category=reference.category,
                changed_attributes=changed,
            )
        )
    return list(gallery.values()), triplets
