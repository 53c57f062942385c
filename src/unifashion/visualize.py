"""Pictures a person would rather look at than numbers: contact sheets and result grids."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

INK = (30, 30, 30)
PAPER = (255, 255, 255)
ACCENT = (200, 40, 60)


def font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def caption_block(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, width_chars: int,
                   max_lines: int, fill=INK, size: int = 11) -> None:
    lines = textwrap.wrap(text, width=width_chars)[:max_lines]
    x, y = xy
    for line in lines:
        draw.text((x, y), line, fill=fill, font=font(size))
        y += size + 2


def item_grid(images: Sequence[Image.Image], captions: Sequence[str], columns: int = 6, tile: int = 128,
              caption_lines: int = 3, title: str | None = None) -> Image.Image:
    """A grid of tiles, each an image with its caption underneath."""
    rows = (len(images) + columns - 1) // columns
    cap_h = caption_lines * 13 + 6
    top = 28 if title else 0
    sheet = Image.new("RGB", (columns * (tile + 8) + 8, top + rows * (tile + cap_h + 8) + 8), PAPER)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 6), title, fill=INK, font=font(16))
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        x = 8 + (i % columns) * (tile + 8)
        y = top + 8 + (i // columns) * (tile + cap_h + 8)
        sheet.paste(img.convert("RGB").resize((tile, tile)), (x, y))
        caption_block(draw, (x, y + tile + 3), cap, width_chars=tile // 6, max_lines=caption_lines)
    return sheet


def triplet_rows(triplets: Sequence[tuple[Image.Image, Sequence[str], Image.Image]], tile: int = 128,
                 title: str | None = None) -> Image.Image:
    """One row per CIR triplet: reference, the two modifying texts, target."""
    text_w = 300
    row_h = tile + 10
    top = 28 if title else 0
    sheet = Image.new("RGB", (tile * 2 + text_w + 32, top + len(triplets) * row_h + 8), PAPER)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 6), title, fill=INK, font=font(16))
    for i, (ref, texts, tgt) in enumerate(triplets):
        y = top + 8 + i * row_h
        sheet.paste(ref.convert("RGB").resize((tile, tile)), (8, y))
        sheet.paste(tgt.convert("RGB").resize((tile, tile)), (8 + tile + text_w + 16, y))
        ty = y + 10
        draw.text((tile + 20, ty), "reference  +", fill=(120, 120, 120), font=font(11))
        ty += 18
        for text in texts:
            caption_block(draw, (tile + 20, ty), f"\u201c{text}\u201d", width_chars=44, max_lines=2, fill=ACCENT,
                           size=13)
            ty += 34
        draw.text((tile + 20, y + tile - 16), "=  target  ->", fill=(120, 120, 120), font=font(11))
    return sheet


def stack(images: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    """Stack pictures vertically on a white page."""
    width = max(im.width for im in images)
    out = Image.new("RGB", (width, sum(im.height for im in images) + gap * (len(images) - 1)), PAPER)
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + gap
    return out


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
