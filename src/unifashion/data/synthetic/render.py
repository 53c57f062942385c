"""A deterministic renderer of flat product images for the embedded synthetic catalogue.

Each attribute of :mod:`unifashion.data.synthetic.attributes` changes the pixels: colour and lightness set
the fabric colour, the pattern is drawn inside the garment, and category, sleeve length, garment
length, fit and neckline change the silhouette. Drawing happens at 2x and is downsampled, so edges
are anti-aliased; the same (attributes, size, seed) always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm.auto import tqdm

from unifashion.data.synthetic.attributes import CATEGORIES, shade, validate_attributes

SUPERSAMPLE = 2
BACKGROUND = (246, 246, 244)
LOGO_WORDS = ("LOVE", "NYC", "88", "SUN", "GO", "ART", "WILD", "JOY")


@dataclass
class RenderedGarment:
    """A rendered product image and the garment's mask (L mode, 255 inside the garment)."""

    image: Image.Image
    mask: Image.Image


def seeded_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.PCG64(seed))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's bundled default font: no system font needed, identical on every machine.
    return ImageFont.load_default(size=max(6, size))


def fill_pattern(
    width: int,
    height: int,
    pattern: str,
    base_rgb: tuple[int, int, int],
    pattern_rgb: tuple[int, int, int] | None,
    seed: int = 0,
    logo_box: tuple[float, float, float] | None = None,
) -> Image.Image:
    """A ``width`` x ``height`` RGB fabric swatch of ``pattern`` in ``base_rgb`` and ``pattern_rgb``.

    ``logo_box`` = (centre x, centre y, size) in pixels places the "text" pattern's graphic; by
    default it sits in the middle of the swatch.
    """
    img = Image.new("RGB", (width, height), base_rgb)
    if pattern == "solid":
        return img
    if pattern_rgb is None:
        raise ValueError(f"pattern {pattern!r} needs a pattern colour")
    draw = ImageDraw.Draw(img)
    rng = seeded_rng(seed)
    period = max(4, min(width, height) // 9)
    phase = int(rng.integers(0, period))
    if pattern == "stripes":
        band = max(2, int(period * 0.42))
        for y in range(-period + phase, height, period):
            draw.rectangle([0, y, width, y + band - 1], fill=pattern_rgb)
    elif pattern == "dots":
        r = max(1.5, period * 0.2)
        for row, y in enumerate(range(-period + phase, height + period, period)):
            offset = period // 2 if row % 2 else 0
            for x in range(-period + offset + phase, width + period, period):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=pattern_rgb)
    elif pattern == "floral":
        n = int(width * height / (period * period) * 1.3)
        centre_rgb = tuple(int(0.5 * a + 0.5 * b) for a, b in zip(base_rgb, (250, 220, 60), strict=True))
        petal = max(1.5, period * 0.17)
        for _ in range(n):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            turn = rng.uniform(0, 2 * np.pi)
            for k in range(5):
                a = turn + 2 * np.pi * k / 5
                px, py = cx + np.cos(a) * petal * 1.3, cy + np.sin(a) * petal * 1.3
                draw.ellipse([px - petal, py - petal, px + petal, py + petal], fill=pattern_rgb)
            draw.ellipse([cx - petal * 0.7, cy - petal * 0.7, cx + petal * 0.7, cy + petal * 0.7],
                         fill=centre_rgb)
    elif pattern == "plaid":
        overlay = Image.new("RGB", (width, height), pattern_rgb)
        bands = Image.new("L", (width, height), 0)
        bdraw = ImageDraw.Draw(bands)
        big = period * 2
        for v in range(-big + phase, max(width, height) + big, big):
            bdraw.rectangle([v, 0, v + big // 3, height], fill=110)
            bdraw.rectangle([0, v, width, v + big // 3], fill=110)
        # Where the bands cross the check is darker, as woven plaid is.
        crossing = Image.new("L", (width, height), 0)
        cdraw = ImageDraw.Draw(crossing)
        for vx in range(-big + phase, width + big, big):
            for vy in range(-big + phase, height + big, big):
                cdraw.rectangle([vx, vy, vx + big // 3, vy + big // 3], fill=200)
        alpha = Image.fromarray(np.maximum(np.asarray(bands), np.asarray(crossing)))
        img = Image.composite(overlay, img, alpha)
        draw = ImageDraw.Draw(img)
        for v in range(-big + phase + big // 2, max(width, height) + big, big):
            draw.line([(v, 0), (v, height)], fill=pattern_rgb, width=1)
            draw.line([(0, v), (width, v)], fill=pattern_rgb, width=1)
    elif pattern == "text":
        cx, cy, box = logo_box or (width / 2, height / 2, min(width, height) * 0.5)
        word = LOGO_WORDS[int(rng.integers(0, len(LOGO_WORDS)))]
        r = box * 0.22
        top = cy - box * 0.35
        draw.ellipse([cx - r, top - r, cx + r, top + r], outline=pattern_rgb, width=max(1, int(r * 0.3)))
        font = _font(int(box * 0.38))
        draw.text((cx, cy + box * 0.12), word, fill=pattern_rgb, font=font, anchor="mm")
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return img


class GarmentFrame:
    """Maps the garment's unit coordinates to canvas pixels, with a seeded shift and scale."""

    def __init__(self, canvas: int, rng: np.random.Generator):
        self.canvas = canvas
        self.dx, self.dy = rng.uniform(-0.03, 0.03, size=2)
        self.scale = rng.uniform(0.94, 1.04)

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        s = self.canvas
        return ((0.5 + self.dx + (x - 0.5) * self.scale) * s, (0.5 + self.dy + (y - 0.5) * self.scale) * s)

    def box(self, x0, y0, x1, y1) -> list[float]:
        a, b = self(x0, y0), self(x1, y1)
        return [a[0], a[1], b[0], b[1]]

    def poly(self, points) -> list[tuple[float, float]]:
        return [self(x, y) for x, y in points]


def _mirror(points):
    """A left-side outline closed by its mirror image on the right (x -> 1 - x)."""
    return list(points) + [(1 - x, y) for x, y in reversed(points)]


def _silhouette(attrs: dict, f: GarmentFrame, draw: ImageDraw.ImageDraw) -> tuple[list, dict]:
    """Draw the garment silhouette (255) into the mask; return seam lines and garment anchors."""
    cat = attrs["category"]
    loose = attrs["fit"] == "loose"
    length_i = CATEGORIES[cat]["lengths"].index(attrs["length"])
    seams: list[list[tuple[float, float]]] = []
    anchors: dict = {}
    if cat in ("dress", "shirt", "toptee"):
        sw = 0.21 if loose else 0.17  # half-width at the shoulders
        ww = 0.20 if loose else 0.135  # half-width at the waist
        neck_y, shoulder_y, arm_y = 0.15, 0.2, 0.34
        if cat == "dress":
            hem = (0.68, 0.82, 0.95)[length_i]
            flare = (0.29 if loose else 0.2) + 0.03 * length_i
            left = [(0.44, neck_y), (0.5 - sw, shoulder_y), (0.5 - sw + 0.03, arm_y),
                    (0.5 - ww, 0.42), (0.5 - flare, hem)]
        else:
            hem = (0.48, 0.6, 0.72)[length_i]
            hw = 0.22 if loose else 0.16
            left = [(0.44, neck_y), (0.5 - sw, shoulder_y), (0.5 - sw + 0.02, arm_y), (0.5 - hw, hem)]
        draw.polygon(f.poly(_mirror(left)), fill=255)
        sleeve = attrs.get("sleeve", "sleeveless")
        for side in (1, -1):
            def m(x, y, side=side):
                return (x if side == 1 else 1 - x, y)
            sx, sy = 0.5 - sw, shoulder_y
            ax, ay = 0.5 - sw + 0.03, arm_y
            if sleeve == "short":
                pts = [m(sx + 0.01, sy - 0.005), m(sx - 0.1, sy + 0.1), m(sx - 0.05, sy + 0.16), m(ax, ay)]
            elif sleeve == "long":
                cuff = 0.07 if loose else 0.055
                pts = [m(sx + 0.01, sy - 0.005), m(sx - 0.11, 0.66), m(sx - 0.11 + cuff, 0.68), m(ax, ay)]
            else:
                continue
            draw.polygon(f.poly(pts), fill=255)
            seams.append(f.poly([m(sx + 0.01, sy - 0.005), m(ax, ay)]))
        anchors["chest"] = (0.5, 0.32 if cat != "dress" else 0.3)
        anchors["hem"] = hem
    elif cat == "skirt":
        top, ww = 0.22, (0.17 if loose else 0.15)
        hem = (0.5, 0.7, 0.92)[length_i]
        flare = (0.3 if loose else 0.19) + 0.03 * length_i
        draw.polygon(f.poly(_mirror([(0.5 - ww, top), (0.5 - flare, hem)])), fill=255)
        seams.append(f.poly([(0.5 - ww, top + 0.04), (0.5 + ww, top + 0.04)]))
        anchors["chest"] = (0.5, top + 0.15)
        anchors["hem"] = hem
    elif cat == "pants":
        top, ww = 0.14, (0.19 if loose else 0.16)
        crotch = 0.36
        bottom = (0.44, 0.72, 0.92)[length_i]
        leg = 0.11 if loose else 0.075  # half-width of a leg opening
        for side in (1, -1):
            def m(x, y, side=side):
                return (x if side == 1 else 1 - x, y)
            inner_x = 0.5 - 0.02  # a visible gap between the legs
            out_x = inner_x - 2 * leg
            pts = [m(0.5, top), m(0.5 - ww, top), m(out_x, bottom), m(inner_x, bottom), m(0.5, crotch)]
            draw.polygon(f.poly(pts), fill=255)
        seams.append(f.poly([(0.5 - ww, top + 0.04), (0.5 + ww, top + 0.04)]))
        anchors["chest"] = (0.5 - ww / 2, top + 0.12)
        anchors["hem"] = bottom
    return seams, anchors


def _neckline(attrs: dict, f: GarmentFrame, mask_draw: ImageDraw.ImageDraw) -> list[tuple[float, float]] | None:
    """Cut the neckline out of the mask; return the collar polygon for a collar, else None."""
    neck = attrs.get("neckline")
    if neck is None:
        return None
    if neck == "round":
        mask_draw.ellipse(f.box(0.435, 0.1, 0.565, 0.215), fill=0)
    elif neck == "v-neck":
        mask_draw.polygon(f.poly([(0.43, 0.14), (0.57, 0.14), (0.5, 0.3)]), fill=0)
    elif neck == "square":
        mask_draw.rectangle(f.box(0.44, 0.13, 0.56, 0.24), fill=0)
    elif neck == "collar":
        mask_draw.ellipse(f.box(0.455, 0.12, 0.545, 0.19), fill=0)
        return [(0.44, 0.145), (0.5, 0.2), (0.455, 0.245), (0.41, 0.17), (0.5, 0.2), (0.59, 0.17),
                (0.545, 0.245), (0.5, 0.2), (0.56, 0.145)]
    return None


def render_garment(attributes: dict, size: int = 128, seed: int = 0) -> RenderedGarment:
    """Render one product image of ``attributes`` at ``size`` x ``size`` pixels.

    ``seed`` varies what a product photo varies (framing, pattern phase, logo word) but never
    the attributes themselves.
    """
    validate_attributes(attributes)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = seeded_rng(seed)
    canvas = size * SUPERSAMPLE
    f = GarmentFrame(canvas, rng)
    mask = Image.new("L", (canvas, canvas), 0)
    mdraw = ImageDraw.Draw(mask)
    seams, anchors = _silhouette(attributes, f, mdraw)
    collar = _neckline(attributes, f, mdraw)

    base = shade(attributes["colour"], attributes["lightness"])
    pattern = attributes["pattern"]
    pattern_rgb = shade(attributes["pattern_colour"], "medium") if pattern != "solid" else None
    cx, cy = f(*anchors["chest"])
    fabric = fill_pattern(canvas, canvas, pattern, base, pattern_rgb, seed=int(rng.integers(0, 2**31)),
                          logo_box=(cx, cy + canvas * 0.02, canvas * 0.22 * f.scale))
    # Soft shading across the body: fabric is darker toward the sides, as in a lit photograph.
    xs = np.linspace(-1.0, 1.0, canvas, dtype=np.float32)
    light = 1.0 - 0.12 * xs[None, :, None] ** 2
    fabric = Image.fromarray(np.clip(np.asarray(fabric, dtype=np.float32) * light, 0, 255).astype(np.uint8))

    bg = tuple(int(c + rng.integers(-2, 3)) for c in BACKGROUND)
    image = Image.new("RGB", (canvas, canvas), bg)
    image.paste(fabric, (0, 0), mask)
    draw = ImageDraw.Draw(image)
    edge_rgb = tuple(int(c * 0.55) for c in base)
    line_w = max(1, canvas // 128)
    for seam in seams:
        draw.line(seam, fill=edge_rgb, width=line_w)
    if attributes["category"] == "shirt":
        # Button placket: the shirt's tell-tale against a tee.
        hem = anchors["hem"]
        draw.line([f(0.5, 0.2), f(0.5, hem - 0.01)], fill=edge_rgb, width=line_w)
        for y in np.linspace(0.24, hem - 0.05, 5):
            bx, by = f(0.515, float(y))
            r = canvas * 0.008
            draw.ellipse([bx - r, by - r, bx + r, by + r], fill=(235, 235, 230), outline=edge_rgb)
    if collar is not None:
        collar_rgb = tuple(min(255, int(c * 0.85 + 40)) for c in base)
        pts = f.poly(collar)
        draw.polygon(pts[:4], fill=collar_rgb, outline=edge_rgb)
        draw.polygon(pts[4:8], fill=collar_rgb, outline=edge_rgb)
        collar_mask = ImageDraw.Draw(mask)
        collar_mask.polygon(pts[:4], fill=255)
        collar_mask.polygon(pts[4:8], fill=255)
    # Outline of the silhouette: the mask minus its erosion.
    eroded = mask.filter(ImageFilter.MinFilter(2 * line_w + 1))
    outline = Image.fromarray(((np.asarray(mask) > 127) & (np.asarray(eroded) < 128)).astype(np.uint8) * 255)
    image.paste(Image.new("RGB", (canvas, canvas), edge_rgb), (0, 0), outline)

    image = image.resize((size, size), Image.Resampling.LANCZOS)
    mask = mask.resize((size, size), Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
    return RenderedGarment(image=image, mask=mask)


def run_render_jobs(write: Callable, jobs: Sequence, *, workers: int, desc: str, unit: str, chunksize: int,
                    progress: bool = True) -> None:
    """``write(job)`` for every job (each draws and saves one picture), in ``workers`` processes
    when more than one, with a progress bar. ``write`` must be a module-level function."""
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(write, jobs, chunksize=chunksize):
                bar.update()
    else:
        for job in jobs:
            write(job)
            bar.update()
    bar.close()
