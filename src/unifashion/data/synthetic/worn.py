"""Embedded worn views: each catalogue garment drawn *worn* by a simple person figure, with the
inputs of the try-on (VITON-HD) and fashion-design (MGD) tasks derived from it.

For one garment and one person (both deterministic in their seeds) :func:`render_worn` gives

- ``person``: the figure wearing the garment. The garment is the catalogue's own flat render
  (:func:`unifashion.data.synthetic.render.render_garment`), mapped onto the body by an affine map that puts
  its shoulders on the figure's shoulders (tops, dresses) or its waistband on the figure's waist
  (skirts, pants) and stretches it with the body's width. So the worn garment is exactly the
  in-shop garment, placed, and the flat render is the in-shop ``cloth`` image.
- ``garment_mask``: the visible garment (255), after the head is drawn over it.
- ``agnostic_mask``: the region to repaint, as VITON-HD derives it: the garment together with
  the body zone a garment of its kind may cover (torso and arms, hands excluded, for tops;
  hips and legs, feet excluded, for skirts and pants; both for dresses), dilated by
  ``dilation`` pixels; then every pixel the head or hair touches is removed, so the face is
  never inside the mask.
- ``masked_person``: the person with the agnostic region painted grey (VITON-HD's
  ``agnostic-v3.2``).
- ``sketch``: the garment's edge lines, as MGD derives sketches from the garment (they use
  PiDiNet; we use Sobel edges, see :func:`edge_map`): the silhouette (the garment mask's inner
  boundary) and the structure lines inside it (seams, placket, collar), taken from the same
  garment rendered *without its pattern*, so that stripes and dots are not sketch lines. 255 =
  line, on black.

Person, pose and scene vary by the person seed: skin tone, hair colour, body width and height,
where the figure stands, how far apart the feet are, the arm angle (arms follow the sleeve of a
long-sleeved garment), the head's tilt, the clothes worn with the garment (trousers under a
top, a tee over a skirt or trousers), shoes and the background colour and shading.

:func:`build_worn_dataset` writes worn views of a catalogue in the VITON-HD / MGD folder layout
that :func:`unifashion.data.viton.load_viton` reads (see that module for the layout). Our
reading of that layout, where the embedded data has to choose:

- images are square PNGs of ``size`` pixels (64 by default: the tiny preset generates at 64 px;
  VITON-HD is 768x1024 JPEG). PNG because 64-pixel JPEGs lose the thin sketch-like lines;
- ``{split}_pairs.txt``: ``train`` lists each person with its own garment, ``test`` with another
  test garment of the same category, as VITON-HD's files do (the ``paired`` setting always uses
  the person's own garment);
- ``im_sketch_unpaired/{person}_{cloth}.png``: the sketch of the pairs-file garment worn by the
  same person (MGD warps the in-shop garment's sketch onto the person; we can simply render it);
- ``captions.json`` keys the full file stem (``dress-000123_00``) with the item's short caption;
- ``attributes.json`` (not part of VITON-HD; the loader ignores it) maps each garment stem to the
  catalogue attributes, for the attribute-accuracy metric, ``{split}/garment-mask/{person}.png``
  (also ours) holds the visible garment's exact mask, and ``worn.json`` records how the data
  were made.

Splits: the catalogue's ``train`` items become VITON ``train``, its ``test`` items VITON
``test`` (``val`` is left out, as VITON-HD has no validation split).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from unifashion.atomic import atomic_write
from unifashion.data.synthetic.render import GarmentFrame, render_garment, run_render_jobs, seeded_rng

#: Drawing happens at this multiple of the output size, then is downsampled (anti-aliased edges).
WORN_SUPERSAMPLE = 4
#: The flat garment is rendered at this multiple of the output size before it is mapped onto the body.
FLAT_SCALE = 2
#: Grey of the masked region in ``agnostic-v3.2`` (VITON-HD paints it a neutral grey).
AGNOSTIC_GREY = (128, 128, 128)
#: Sobel edge threshold of :func:`edge_map` (luminance in [0, 1]; a unit step scores 1).
EDGE_THRESHOLD = 0.12

SKIN_TONES = ((241, 204, 178), (224, 172, 138), (198, 140, 100), (160, 104, 70), (120, 76, 50), (86, 56, 38))
HAIR_COLOURS = ((30, 24, 20), (70, 44, 26), (120, 80, 40), (200, 160, 90), (150, 150, 150), (110, 30, 20))
BACKGROUNDS = ((236, 234, 228), (222, 228, 236), (236, 226, 222), (226, 234, 224), (214, 214, 214), (240, 236, 220))
#: Clothes worn with the catalogue garment: trousers under a top, a tee with a skirt or trousers.
OTHER_BOTTOMS = ((52, 72, 110), (40, 40, 44), (150, 130, 96), (96, 96, 100))
OTHER_TOPS = ((238, 238, 236), (150, 150, 152), (44, 44, 48), (200, 190, 170))
SHOES = ((30, 30, 30), (90, 60, 40), (230, 230, 230))

UPPER = ("shirt", "toptee")
UPPER_ZOOM = 1.45
LOWER = ("skirt", "pants")

# Where the garment frame meets the body (unit coordinates, y down): shoulders for tops and
# dresses, the waistband for skirts and pants, and the frame-to-body scale.
_ANCHORS = {"upper": (0.2, 0.205, 0.78), "lower_skirt": (0.22, 0.44, 0.68), "lower_pants": (0.14, 0.44, 0.68)}


def edge_map(image: Image.Image | np.ndarray, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """Boolean (H, W) edge map: Sobel gradient magnitude of the luminance above ``threshold``.

    Luminance is in [0, 1] and the magnitude is divided by 4, so a sharp black-to-white step
    scores 1. The same detector derives the sketches and scores sketch adherence.
    """
    array = np.asarray(image.convert("L") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if array.ndim == 3:
        array = array @ np.array([0.299, 0.587, 0.114])
    if array.max() > 1.0:
        array = array / 255.0
    gx = ndimage.sobel(array, axis=1, mode="nearest")
    gy = ndimage.sobel(array, axis=0, mode="nearest")
    return np.hypot(gx, gy) / 4.0 > threshold


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a boolean mask with at least one 4-neighbour outside it."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1),
                                          border_value=0)


@dataclass
class PersonSpec:
    """Who wears the garment and how they stand (all drawn from the person seed)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    other_top: tuple[int, int, int]
    other_bottom: tuple[int, int, int]
    shoes: tuple[int, int, int]
    width: float  # body width factor
    height: float  # body height factor
    centre_x: float  # where the figure stands (unit x of its centre line)
    stance: float  # half the distance between the feet (unit)
    arm_angle: float  # extra outward arm angle (radians) when no long sleeve fixes it
    head_tilt: float  # sideways shift of the head (unit)

    @classmethod
    def sample(cls, seed: int) -> PersonSpec:
        rng = seeded_rng(seed)

        def pick(palette):
            return tuple(palette[int(rng.integers(len(palette)))])

        return cls(skin=pick(SKIN_TONES), hair=pick(HAIR_COLOURS), background=pick(BACKGROUNDS),
                   other_top=pick(OTHER_TOPS), other_bottom=pick(OTHER_BOTTOMS), shoes=pick(SHOES),
                   width=float(rng.uniform(0.88, 1.12)), height=float(rng.uniform(0.93, 1.0)),
                   centre_x=float(rng.uniform(0.46, 0.54)), stance=float(rng.uniform(0.035, 0.08)),
                   arm_angle=float(rng.uniform(-0.08, 0.12)), head_tilt=float(rng.uniform(-0.012, 0.012)))


@dataclass
class WornView:
    """One worn view and what the try-on and design tasks derive from it (see the module docstring).

    Masks and the sketch are L-mode images with values 0 / 255; the head mask marks every pixel
    the head or hair touches.
    """

    person: Image.Image
    garment_mask: Image.Image
    agnostic_mask: Image.Image
    masked_person: Image.Image
    sketch: Image.Image
    head_mask: Image.Image
    cloth: Image.Image


def framing_zoom(category: str) -> float:
    """How much closer the camera is: tops are framed head to knees (as VITON-HD frames its upper
    body photos), so that the garment has more pixels; dresses, skirts and pants head to feet."""
    return UPPER_ZOOM if category in UPPER else 1.0


class _Body:
    """Unit body coordinates -> canvas pixels for one person (y down)."""

    def __init__(self, person: PersonSpec, canvas: int, zoom: float = 1.0):
        self.p, self.c = person, canvas
        self.scale = person.height * zoom
        # Full figures stand with their feet near the bottom; zoomed ones keep the head in view.
        self.y0 = (1.0 - person.height) * 0.6 if zoom == 1.0 else 0.01

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        p = self.p
        return ((p.centre_x + (x - 0.5) * p.width * self.scale) * self.c, (self.y0 + y * self.scale) * self.c)

    def poly(self, points) -> list[tuple[float, float]]:
        return [self(x, y) for x, y in points]

    def sx(self, dx: float) -> float:
        """A horizontal unit length in pixels."""
        return dx * self.p.width * self.scale * self.c


def _garment_kind(category: str) -> str:
    if category in LOWER:
        return "lower_skirt" if category == "skirt" else "lower_pants"
    return "upper"


def _garment_affine(attributes: dict, garment_seed: int, person: PersonSpec, canvas: int, flat: int) -> tuple:
    """PIL AFFINE coefficients mapping worn-canvas pixels to flat-render pixels (see module docstring).

    The flat render places garment unit (gx, gy) at ``GarmentFrame`` pixel ((0.5 + dx + (gx - 0.5) s) F,
    (0.5 + dy + (gy - 0.5) s) F); the body puts unit (bx, by) at canvas
    ((cx + (bx - 0.5) w h) C, (y0 + by h) C) (h: height times framing zoom); and
    bx = 0.5 + (gx - 0.5) k, by = b + (gy - g) k.
    """
    frame = GarmentFrame(flat, seeded_rng(garment_seed))  # the same framing draw render_garment makes first
    g_anchor, b_anchor, k = _ANCHORS[_garment_kind(attributes["category"])]
    body = _Body(person, canvas, framing_zoom(attributes["category"]))
    w, h, cx, y0 = person.width, body.scale, person.centre_x, body.y0
    s, dx, dy, F, C = frame.scale, frame.dx, frame.dy, flat, canvas
    a = F * s / (w * h * k * C)
    c = F * (0.5 + dx) - a * C * cx
    e = F * s / (C * h * k)
    f = F * (0.5 + dy) + F * s * (g_anchor - 0.5 - (y0 / h + b_anchor) / k)
    return (a, 0.0, c, 0.0, e, f)


def _limb(draw: ImageDraw.ImageDraw, start, end, width_start: float, width_end: float, fill) -> None:
    """A tapered limb from ``start`` to ``end`` (canvas pixels) with rounded ends."""
    (x0, y0), (x1, y1) = start, end
    length = max(1e-6, float(np.hypot(x1 - x0, y1 - y0)))
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length
    draw.polygon([(x0 + nx * width_start, y0 + ny * width_start), (x1 + nx * width_end, y1 + ny * width_end),
                  (x1 - nx * width_end, y1 - ny * width_end), (x0 - nx * width_start, y0 - ny * width_start)],
                 fill=fill)
    for (x, y), r in (((x0, y0), width_start), ((x1, y1), width_end)):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _arm_ends(attributes: dict, person: PersonSpec, side: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shoulder and wrist (unit body coordinates) of one arm; side = -1 left, +1 right."""
    shoulder = (0.5 + side * 0.115, 0.225)
    # The long sleeve of the flat render ends near unit (0.28, 0.565) on the body: a long-sleeved
    # garment fixes the arm there; otherwise the pose opens or closes the arm a little.
    angle = np.arctan2(0.5 - 0.115 - 0.28, 0.565 - 0.225)
    if attributes.get("sleeve") != "long":
        angle += person.arm_angle
    length = 0.36
    wrist = (shoulder[0] + side * np.sin(angle) * length, shoulder[1] + np.cos(angle) * length)
    return shoulder, wrist


def _draw_figure(attributes: dict, person: PersonSpec, canvas: int, layer: str, draw: ImageDraw.ImageDraw,
                 fill=None) -> None:
    """Draw one layer of the figure: "legs", "shoes", "torso", "arms", "hands", "other", "neck", "head".

    ``fill`` overrides the colour (masks draw a layer in 255).
    """
    body = _Body(person, canvas, framing_zoom(attributes["category"]))
    p = person
    skin = fill or p.skin
    category = attributes["category"]
    stance = 0.068 if category == "pants" else p.stance  # trousers' legs fix the feet
    hips = [(0.5 - side * 0.055, 0.5) for side in (-1, 1)]
    feet = [(0.5 + side * stance, 0.955) for side in (-1, 1)]
    if layer == "legs":
        draw.polygon(body.poly([(0.39, 0.44), (0.61, 0.44), (0.615, 0.53), (0.385, 0.53)]), fill=skin)
        for hip, foot in zip(hips, feet, strict=True):
            _limb(draw, body(*hip), body(*foot), body.sx(0.05), body.sx(0.028), skin)
    elif layer == "legs_zone":  # hips and legs down to the ankles, for the agnostic mask
        draw.polygon(body.poly([(0.385, 0.43), (0.615, 0.43), (0.62, 0.53), (0.38, 0.53)]), fill=fill)
        for hip, foot in zip(hips, feet, strict=True):
            ankle = (foot[0], 0.93)
            _limb(draw, body(*hip), body(*ankle), body.sx(0.06), body.sx(0.04), fill)
    elif layer == "shoes":
        for x, _ in feet:
            draw.ellipse(body.poly([(x - 0.035, 0.945), (x + 0.035, 0.985)]), fill=fill or p.shoes)
    elif layer == "torso":
        draw.polygon(body.poly([(0.37, 0.205), (0.63, 0.205), (0.615, 0.45), (0.385, 0.45)]), fill=skin)
    elif layer == "torso_zone":  # shoulders to hips, for the agnostic mask of tops and dresses
        draw.polygon(body.poly([(0.36, 0.2), (0.64, 0.2), (0.63, 0.53), (0.37, 0.53)]), fill=fill)
    elif layer in ("arms", "hands"):
        for side in (-1, 1):
            shoulder, wrist = _arm_ends(attributes, p, side)
            if layer == "arms":
                _limb(draw, body(*shoulder), body(*wrist), body.sx(0.036), body.sx(0.024), skin)
            else:
                x, y = body(*wrist)
                r = body.sx(0.03)
                draw.ellipse([x - r, y - r * 0.4, x + r, y + r * 1.6], fill=skin)
    elif layer == "other":  # the clothes worn with the garment
        if category in UPPER:
            draw.polygon(body.poly([(0.385, 0.44), (0.615, 0.44), (0.62, 0.54), (0.38, 0.54)]), fill=p.other_bottom)
            for hip, foot in zip(hips, feet, strict=True):
                _limb(draw, body(*hip), body(foot[0], 0.93), body.sx(0.058), body.sx(0.036), p.other_bottom)
        elif category in LOWER:
            draw.polygon(body.poly([(0.37, 0.205), (0.63, 0.205), (0.62, 0.47), (0.38, 0.47)]), fill=p.other_top)
            for side in (-1, 1):
                shoulder, wrist = _arm_ends(attributes, p, side)
                elbow = (shoulder[0] + (wrist[0] - shoulder[0]) * 0.35, shoulder[1] + (wrist[1] - shoulder[1]) * 0.35)
                _limb(draw, body(*shoulder), body(*elbow), body.sx(0.05), body.sx(0.04), p.other_top)
    elif layer == "neck":
        draw.rectangle(body.poly([(0.47, 0.14), (0.53, 0.215)]), fill=skin)
    elif layer == "head":
        hx = 0.5 + p.head_tilt
        draw.ellipse(body.poly([(hx - 0.055, 0.03), (hx + 0.055, 0.165)]), fill=skin)
        hair = fill or p.hair
        draw.chord(body.poly([(hx - 0.06, 0.02), (hx + 0.06, 0.12)]), 180, 360, fill=hair)
        draw.rectangle(body.poly([(hx - 0.06, 0.068), (hx - 0.045, 0.125)]), fill=hair)
        draw.rectangle(body.poly([(hx + 0.045, 0.068), (hx + 0.06, 0.125)]), fill=hair)
    else:
        raise ValueError(f"unknown figure layer {layer!r}")


def _downsample_mask(mask: Image.Image, size: int, rule: str = "half") -> np.ndarray:
    """A canvas mask at ``size`` pixels: "half" = at least half covered, "any" = touched at all."""
    small = np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)
    return small >= 128 if rule == "half" else small > 0


def _to_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255)


def _solid_attributes(attributes: dict) -> dict:
    solid = {k: v for k, v in attributes.items() if k != "pattern_colour"}
    solid["pattern"] = "solid"
    return solid


def _worn_garment(attributes: dict, garment_seed: int, person: PersonSpec, canvas: int, flat: int):
    """The garment mapped onto the body: (RGB canvas image, L canvas mask)."""
    rendered = render_garment(attributes, flat, garment_seed)
    coeffs = _garment_affine(attributes, garment_seed, person, canvas, flat)
    image = rendered.image.transform((canvas, canvas), Image.Transform.AFFINE, coeffs,
                                     resample=Image.Resampling.BILINEAR)
    mask = rendered.mask.transform((canvas, canvas), Image.Transform.AFFINE, coeffs,
                                   resample=Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
    return image, mask


def render_worn(attributes: dict, garment_seed: int, person_seed: int, size: int = 64,
                dilation: int = 2) -> WornView:
    """The garment ``attributes`` (rendered with ``garment_seed``, as in the catalogue) worn by the
    person of ``person_seed``, at ``size`` x ``size`` pixels; see the module docstring."""
    if size < 32:
        raise ValueError(f"worn views need at least 32 pixels, got {size}")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0 pixels, got {dilation}")
    person = PersonSpec.sample(person_seed)
    canvas = size * WORN_SUPERSAMPLE
    flat = size * FLAT_SCALE

    # The scene: background with a soft vertical fall-off, then the figure layer by layer.
    ys = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[:, None, None]
    scene = np.broadcast_to(np.asarray(person.background, dtype=np.float32) * (1.02 - 0.08 * ys),
                            (canvas, canvas, 3))
    image = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for layer in ("legs", "shoes", "torso", "arms", "other", "neck"):
        _draw_figure(attributes, person, canvas, layer, draw)
    garment_image, garment_canvas_mask = _worn_garment(attributes, garment_seed, person, canvas, flat)
    image.paste(garment_image, (0, 0), garment_canvas_mask)
    for layer in ("hands", "head"):
        _draw_figure(attributes, person, canvas, layer, draw)

    # Masks at canvas resolution, then at the output size.
    head_canvas = Image.new("L", (canvas, canvas), 0)
    _draw_figure(attributes, person, canvas, "head", ImageDraw.Draw(head_canvas), fill=255)
    zone_canvas = Image.new("L", (canvas, canvas), 0)
    zone_draw = ImageDraw.Draw(zone_canvas)
    category = attributes["category"]
    if category not in LOWER:  # tops and dresses: torso and arms (hands stay)
        _draw_figure(attributes, person, canvas, "torso_zone", zone_draw, fill=255)
        _draw_figure(attributes, person, canvas, "arms", zone_draw, fill=255)
    if category not in UPPER:  # skirts, pants and dresses: hips and legs (feet stay)
        _draw_figure(attributes, person, canvas, "legs_zone", zone_draw, fill=255)

    head = _downsample_mask(head_canvas, size, "any")
    garment = _downsample_mask(garment_canvas_mask, size) & ~head
    zone = _downsample_mask(zone_canvas, size)
    agnostic = garment | zone
    if dilation:
        agnostic = ndimage.binary_dilation(agnostic, structure=np.ones((3, 3), bool), iterations=dilation)
    agnostic &= ~head

    person_image = image.resize((size, size), Image.Resampling.LANCZOS)
    masked = np.asarray(person_image).copy()
    masked[agnostic] = AGNOSTIC_GREY

    # The sketch: silhouette + structure lines of the pattern-free garment on a plain ground.
    solid_image, _ = _worn_garment(_solid_attributes(attributes), garment_seed, person, canvas, flat)
    plain = Image.new("RGB", (canvas, canvas), (128, 128, 128))
    plain.paste(solid_image, (0, 0), garment_canvas_mask)
    inside = ndimage.binary_erosion(garment, structure=ndimage.generate_binary_structure(2, 1))
    lines = inner_boundary(garment) | (edge_map(plain.resize((size, size), Image.Resampling.LANCZOS)) & inside)

    return WornView(person=person_image, garment_mask=_to_image(garment), agnostic_mask=_to_image(agnostic),
                    masked_person=Image.fromarray(masked), sketch=_to_image(lines), head_mask=_to_image(head),
                    cloth=render_garment(attributes, size, garment_seed).image)


# ---------------------------------------------------------------------------- the dataset
@dataclass
class WornConfig:
    """How :func:`build_worn_dataset` draws the worn views."""

    size: int = 64
    seed: int = 0
    dilation: int = 2


def person_seed(seed: int, item_id: str) -> int:
    """The seed of the person wearing ``item_id`` (stable under adding or removing other items)."""
    digest = np.frombuffer(item_id.encode("utf-8"), dtype=np.uint8).astype(np.uint32)
    return int(np.random.SeedSequence([seed, 7, *digest.tolist()]).generate_state(1)[0])


def worn_stem(item_id: str) -> str:
    """VITON-HD names a product photo ``{product}_{view}``; ours are view 00 of the catalogue item."""
    return f"{item_id}_00"


def unpaired_partners(items: Sequence, seed: int) -> dict[str, str]:
    """Each item -> another item of the same category (a seeded derangement per category); an item
    alone in its category keeps itself."""
    rng = np.random.default_rng(np.random.PCG64(seed))
    by_category: dict[str, list[str]] = {}
    for item in items:
        by_category.setdefault(item.attributes["category"], []).append(item.item_id)
    partners = {}
    for ids in by_category.values():
        if len(ids) == 1:
            partners[ids[0]] = ids[0]
            continue
        shift = 1 + int(rng.integers(len(ids) - 1))  # a cyclic shift by 1..n-1 moves every item
        order = list(rng.permutation(len(ids)))
        for position, index in enumerate(order):
            partners[ids[index]] = ids[order[(position + shift) % len(ids)]]
    return partners


def _write_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", optimize=False)


def _write_sample(job) -> None:
    """Render one person with their garment (and the unpaired garment's sketch) into ``root/split``."""
    split_dir, item, partner, config = job
    stem = worn_stem(item["id"])
    view = render_worn(item["attributes"], item["seed"], person_seed(config["seed"], item["id"]), config["size"],
                       config["dilation"])
    _write_png(view.person, split_dir / "image" / f"{stem}.png")
    _write_png(view.cloth, split_dir / "cloth" / f"{stem}.png")
    _write_png(view.agnostic_mask, split_dir / "agnostic-mask" / f"{stem}_mask.png")
    _write_png(view.masked_person, split_dir / "agnostic-v3.2" / f"{stem}.png")
    _write_png(view.sketch, split_dir / "im_sketch" / f"{stem}.png")
    _write_png(view.garment_mask, split_dir / "garment-mask" / f"{stem}.png")
    if partner is not None:
        other = render_worn(partner["attributes"], partner["seed"], person_seed(config["seed"], item["id"]),
                            config["size"], config["dilation"])
        _write_png(other.sketch, split_dir / "im_sketch_unpaired" / f"{stem}_{worn_stem(partner['id'])}.png")


def build_worn_dataset(catalogue, out_dir: str | os.PathLike, config: WornConfig | None = None,
                       splits: Sequence[str] = ("train", "test"), limit: int | None = None,
                       workers: int = 1, progress: bool = True) -> dict[str, int]:
    """Write worn views of ``catalogue``'s items in the VITON-HD / MGD layout under ``out_dir``.

    ``splits`` are catalogue splits (each becomes the VITON split of the same name); ``limit``
    keeps the first items of each split (small runs and tests). Returns the samples per split.
    Same catalogue, config and limit: the same bytes. Metadata is written last, so an
    interrupted build leaves no pairs file pointing at missing images.
    """
    config = config or WornConfig()
    out = Path(out_dir)
    captions: dict[str, list[str]] = {}
    attributes: dict[str, dict] = {}
    counts: dict[str, int] = {}
    pair_lines: dict[str, list[str]] = {}
    jobs = []
    for split in splits:
        items = [it for it in catalogue.items if it.split == split][:limit]
        if not items:
            raise ValueError(f"the catalogue has no {split!r} items to draw")
        split_dir = out / split
        for folder in ("image", "cloth", "agnostic-mask", "agnostic-v3.2", "im_sketch", "garment-mask",
                       "im_sketch_unpaired"):
            (split_dir / folder).mkdir(parents=True, exist_ok=True)
        # VITON-HD's train pairs are the person's own garment; its test pairs another garment.
        partners = unpaired_partners(items, config.seed) if split != "train" else {}
        by_id = {it.item_id: it for it in items}
        lines = []
        for it in items:
            row = {"id": it.item_id, "attributes": it.attributes, "seed": it.seed}
            partner_id = partners.get(it.item_id)
            partner = by_id[partner_id] if partner_id is not None else None
            partner_row = ({"id": partner.item_id, "attributes": partner.attributes, "seed": partner.seed}
                           if partner is not None else None)
            jobs.append((split_dir, row, partner_row, asdict(config)))
            cloth_id = partner_id or it.item_id
            lines.append(f"{worn_stem(it.item_id)}.png {worn_stem(cloth_id)}.png")
            captions[worn_stem(it.item_id)] = [it.captions["short"]]
            attributes[worn_stem(it.item_id)] = dict(it.attributes)
        pair_lines[split] = lines
        counts[split] = len(items)

    run_render_jobs(_write_sample, jobs, workers=workers, desc="rendering worn views", unit="person", chunksize=32,
                    progress=progress)

    atomic_write(out / "captions.json", json.dumps(captions, indent=1, sort_keys=True) + "\n")
    atomic_write(out / "attributes.json", json.dumps(attributes, indent=1, sort_keys=True) + "\n")
    for split, lines in pair_lines.items():
        atomic_write(out / f"{split}_pairs.txt", "\n".join(lines) + "\n")
    meta = {"config": asdict(config), "samples": counts, "catalogue": asdict(catalogue.config),
            "layout": "VITON-HD/MGD (see unifashion.data.synthetic.worn)", "format": 1}
    atomic_write(out / "worn.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return counts


def read_garment_attributes(root: str | os.PathLike) -> dict[str, dict]:
    """``attributes.json`` of a worn-view folder: garment stem -> catalogue attributes ({} if absent,
    as in the real VITON-HD, which has no attribute labels)."""
    path = Path(root) / "attributes.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
