"""Design / try-on metrics against hand-computed references, and the picture grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from unifashion.data.synthetic.render import BACKGROUND
from unifashion.evaluation.tryon import copy_paste, garment_crop, sketch_f1


def step_image(size: int = 8, column: int = 4) -> np.ndarray:
    """Black left of ``column``, white from it: Sobel edges on columns column-1 and column."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:, column:] = 255
    return image


def test_sketch_f1_by_hand():
    image = step_image()  # edges E: columns 3 and 4, 16 pixels
    sketch = np.zeros((8, 8), dtype=bool)
    sketch[:, 3] = True  # 8 pixels on an edge
    sketch[0, 7] = True  # 1 stray pixel, 3 columns from the nearest edge
    everywhere = np.ones((8, 8), dtype=bool)
    precision, recall, f1 = sketch_f1(sketch, image, everywhere)
    assert precision == 1.0  # every edge pixel is within 1 px of a sketch line
    assert recall == pytest.approx(8 / 9)
    assert f1 == pytest.approx(16 / 17)
    # Only the region counts: the left half holds the line and one edge column, both matched.
    left = np.zeros((8, 8), dtype=bool)
    left[:, :4] = True
    assert sketch_f1(sketch, image, left) == (1.0, 1.0, 1.0)
    # Tolerance 0: edge column 4 has no sketch pixel on it.
    assert sketch_f1(sketch, image, everywhere, tolerance=0)[0] == pytest.approx(0.5)


def test_sketch_f1_edge_cases():
    flat = np.full((8, 8, 3), 90, dtype=np.uint8)
    sketch = np.zeros((8, 8), dtype=bool)
    sketch[2, 2] = True
    region = np.ones((8, 8), dtype=bool)
    assert sketch_f1(sketch, flat, region) == (0.0, 0.0, 0.0)  # nothing drawn: no adherence
    assert all(math.isnan(v) for v in sketch_f1(np.zeros((8, 8), bool), flat, region))  # no sketch: undefined


def test_garment_crop_by_hand():
    image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    region = np.zeros((10, 10), dtype=bool)
    region[2:6, 3:5] = True  # 4 rows x 2 columns
    crop = garment_crop(image, region, size=4, margin=0.0)
    # The 4x4 square centred on the box: rows 2..5, columns 2..5; columns 2 and 5 lie outside the mask.
    assert (crop[:, 1:3] == image[2:6, 3:5]).all()
    assert (crop[:, 0] == BACKGROUND).all() and (crop[:, 3] == BACKGROUND).all()
    with pytest.raises(ValueError, match="empty mask"):
        garment_crop(image, np.zeros((10, 10), bool))


def test_garment_crop_pads_past_the_image_edge():
    image = np.full((6, 6, 3), 7, dtype=np.uint8)
    region = np.zeros((6, 6), dtype=bool)
    region[0:4, 0:1] = True  # a tall box at the left edge: the square reaches past the image
    crop = garment_crop(image, region, size=4, margin=0.0)
    # The square spans columns -2..1 (centre 0.5): image column 0 lands at crop column 2.
    assert (crop[:, 2] == 7).all()
    assert all((crop[:, c] == BACKGROUND).all() for c in (0, 1, 3))


def test_copy_paste_keeps_the_outside_and_uses_the_garment():
    person = np.full((16, 16, 3), 200, dtype=np.uint8)
    person[:, :2] = 10
    region = np.zeros((16, 16), dtype=bool)
    region[4:12, 4:12] = True
    garment = np.full((8, 8, 3), 246, dtype=np.uint8)
    garment[2:6, 2:6] = (200, 20, 20)  # a red square on the product background
    out = copy_paste(person, region, garment)
    assert (out[~region] == person[~region]).all()
    assert (out[region] == (200, 20, 20)).all(axis=-1).mean() > 0.9  # the cut-out fills the box
    plain = copy_paste(person, region, np.full((8, 8, 3), 246, dtype=np.uint8))  # nothing to cut out
    assert (plain[region] == 200).all()  # the mean colour around the mask


def test_result_grid_layout():
    from unifashion.evaluation.tryon import GROUND_TRUTH, TryOnTestSet, result_grid

    n, size = 3, 16
    person = np.zeros((n, size, size, 3), dtype=np.uint8)
    mask = np.zeros((n, size, size), dtype=bool)
    mask[:, 4:12, 4:12] = True
    data = TryOnTestSet(records=[None] * n, person=person, mask=mask, sketch=mask.copy(),
                        garments=[Image.new("RGB", (size, size))] * n, texts=["a red dress"] * n,
                        attributes=[{}] * n)
    generated = {"design": {"unifashion": person, GROUND_TRUTH: person},
                 "tryon": {"unifashion": person, "copy-paste": person, GROUND_TRUTH: person}}
    grid = result_grid(data, generated, rows=2, tile=32)
    # design: masked person, caption, sketch, 1 method, ground truth = 5 columns of 32 + 8 px
    assert grid.width == 8 + 5 * 40
    assert grid.height > 2 * 2 * 40
