"""Evaluation of fashion design (MGD) and virtual try-on (VITON-HD), paired and unpaired.

Settings, as the papers evaluate them: ``paired`` redraws the garment the person wears (ground
truth exists); ``unpaired`` puts another garment of the same category on the person (the pairs
file's garment, its text and sketch; no ground truth, so only distribution and attribute
metrics mean something there).

Methods measured in the same run, on the same test persons and the same noise:

- ``unifashion``: the trained model, design = person + mask + sketch + text, try-on = person +
  mask + in-shop garment (+ sketch when it was trained with one);
- ``unifashion-no-sketch`` (design): the same model with the sketch channel left empty;
- ``condition-only-pasted``: the same UNet given only its condition (text, or garment queries),
  no person / mask / sketch channels, its image pasted into the mask: the plain text-to-image
  comparison that SDEdit/MGD-style tables make;
- ``copy-paste`` (try-on): no learning: the in-shop garment's cut-out scaled into the mask's
  bounding box, the rest of the mask filled with the mean colour just around the mask;
- ``before-tryon-training``: the starting model (``tiny-default``) given the same inputs as
  ``unifashion``: what the try-on training adds (its UNet never saw a person, a mask or a sketch);
- ``ground-truth`` (paired only): the real person image through the same metrics, the ceiling of
  each judge (attribute classifier, sketch edges, image-text score).

Metrics (every generated image has the person's own pixels outside the mask):

- ``FID`` / ``KID x1000`` (torchmetrics') on EfficientNet-Lite0 pooled features (labelled "EffLite0"; not
  comparable with Inception FIDs), generated persons against the real test persons; with a few
  hundred images FID is biased upward, KID is not;
- ``attribute accuracy`` (colour, pattern, sleeve) of the generated garment region, judged by an
  attribute classifier (:mod:`~unifashion.evaluation.attribute_classifier`'s network) trained
  separately on the garment crops of the *train* split's real worn views
  (:func:`load_or_train_worn_judge`), never on generated images. The flat-render classifier of
  the other FIG metrics judges colour and pattern of these crops well but not sleeves (bare arms
  read as sleeves to it), hence a judge of its own. The region is cut out by
  :func:`garment_crop`: the mask's bounding box, made square with a margin, every pixel outside
  the mask set to the product-photo background, resized to the classifier's input. Sleeve
  accuracy counts only garments that have sleeves. Expected attributes are those of the garment
  asked for (the pairs-file garment in the unpaired setting);
- ``sketch-F1``: :func:`sketch_f1`, the boundary F-measure (as DAVIS / BSDS score contours)
  between the sketch lines and the generated image's edges inside the mask, 1-pixel tolerance;
- ``image-text score`` (design): the model's own ITC score max_q <Z_q(crop), t(text)> x 100 of the
  garment crop and the text, labelled as the model's score (it stands in for CLIP-S).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm.auto import tqdm

from unifashion.data.records import TryOnRecord, load_image
from unifashion.data.synthetic.render import BACKGROUND
from unifashion.data.synthetic.worn import edge_map
from unifashion.evaluation.generation import fid, kid
from unifashion.evaluation.results import ResultTable
from unifashion.settings import TRYON_EVAL

SETTINGS = ("paired", "unpaired")
DESIGN_METHODS = ("unifashion", "unifashion-no-sketch", "condition-only-pasted")
TRYON_METHODS = ("unifashion", "condition-only-pasted", "copy-paste")
GROUND_TRUTH = "ground-truth"


@dataclass
class TryOnEvalConfig:
    settings: tuple[str, ...] = SETTINGS
    max_items: int | None = 120  # test persons per setting (None: all)
    steps: int = TRYON_EVAL.steps
    scheduler: str = TRYON_EVAL.sampler
    guidance: float = TRYON_EVAL.guidance
    batch_size: int = 32
    seed: int = 0
    grid_rows: int = 6
    tryon_sketch: bool = False  # the model was trained to take a sketch for try-on too
    judge_steps: int = 500  # training steps of the worn-garment attribute judge (when not cached)
    compare_start_model: bool = True  # also run the model the training started from ("before-tryon-training")
    methods: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"design": DESIGN_METHODS,
                                                                         "tryon": TRYON_METHODS})


# ---------------------------------------------------------------------------- metrics
def garment_crop(image: np.ndarray, region: np.ndarray, size: int = 64, margin: float = 0.08) -> np.ndarray:
    """The garment region of a person image as a product-photo-like square (uint8, size x size x 3).

    The bounding box of ``region`` (the agnostic mask) is widened to a square with ``margin`` on
    each side; pixels outside ``region`` (and outside the image) become the catalogue's product
    background, so the attribute classifier, trained on flat renders, sees the garment alone.
    """
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        raise ValueError("empty mask: no garment region to crop")
    composite = np.where(region[..., None], image, np.asarray(BACKGROUND, dtype=np.uint8))
    side = int(np.ceil(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) * (1 + 2 * margin)))
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(image.shape[0], top + side), min(image.shape[1], left + side)
    canvas[y0 - top:y1 - top, x0 - left:x1 - left] = composite[y0:y1, x0:x1]
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR))


def sketch_f1(sketch: np.ndarray, image: np.ndarray, region: np.ndarray,
              tolerance: int = 1) -> tuple[float, float, float]:
    """(precision, recall, F1) of the edges of ``image`` against the ``sketch`` lines, inside ``region``.

    S = sketch pixels in the region; E = :func:`~unifashion.data.synthetic.worn.edge_map` pixels of the
    image in the region. A pixel of one set counts as matched when the other set has a pixel
    within ``tolerance`` (Chebyshev distance). precision = matched E / |E|, recall = matched S /
    |S|, F1 their harmonic mean; no edges at all give precision 0. Returns NaNs when the sketch
    has no line in the region (nothing to adhere to).
    """
    lines = sketch.astype(bool) & region
    edges = edge_map(image) & region
    if not lines.any():
        return float("nan"), float("nan"), float("nan")
    if not edges.any():
        return 0.0, 0.0, 0.0
    grow = np.ones((2 * tolerance + 1, 2 * tolerance + 1), dtype=bool)
    precision = float((edges & ndimage.binary_dilation(lines, grow)).sum() / edges.sum())
    recall = float((lines & ndimage.binary_dilation(edges, grow)).sum() / lines.sum())
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def copy_paste(person: np.ndarray, region: np.ndarray, garment: np.ndarray, tolerance: int = 24) -> np.ndarray:
    """Non-learned try-on: the garment cut out of its product photo (pixels farther than
    ``tolerance`` from the corner colour, summed over RGB) and scaled to the mask's bounding box;
    the rest of the mask is the mean colour of the ring of pixels just outside the mask."""
    out = person.copy()
    ring = ndimage.binary_dilation(region, np.ones((3, 3), dtype=bool)) & ~region
    fill = person[ring].mean(axis=0) if ring.any() else person[~region].mean(axis=0)
    out[region] = fill.round().astype(np.uint8)
    background = garment[0, 0].astype(int)
    cut = np.abs(garment.astype(int) - background).sum(axis=2) > tolerance
    ys, xs = np.nonzero(region)
    gy, gx = np.nonzero(cut)
    if len(gy) == 0:
        return out
    box_h, box_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    crop = Image.fromarray(garment[gy.min():gy.max() + 1, gx.min():gx.max() + 1])
    crop_cut = Image.fromarray(cut[gy.min():gy.max() + 1, gx.min():gx.max() + 1].astype(np.uint8) * 255)
    pasted = np.asarray(crop.resize((box_w, box_h), Image.Resampling.BILINEAR))
    pasted_cut = np.asarray(crop_cut.resize((box_w, box_h), Image.Resampling.NEAREST)) > 127
    window = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    where = pasted_cut & region[window]
    out[window][where] = pasted[where]
    return out


def load_or_train_worn_judge(records: Sequence[TryOnRecord], attributes: dict[str, dict], directory: str | Path,
                             steps: int = 600, seed: int = 1000, progress: bool = True):
    """The attribute judge of worn garments: loaded from ``directory``, or trained there first on
    :func:`garment_crop` of each (real, rendered) person in ``records`` with its garment's attributes."""
    from unifashion.evaluation.attribute_classifier import (
        AttributeClassifier,
        AttributeClassifierConfig,
        train_attribute_classifier,
    )

    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        return AttributeClassifier.load(directory)
    labelled = [r for r in records if r.garment_id in attributes]
    if not labelled:
        raise ValueError("no attribute labels for the judge's training persons (attributes.json missing?)")
    size = AttributeClassifierConfig().image_size
    crops = [Image.fromarray(garment_crop(np.asarray(load_image(r.person)),
                                          np.asarray(load_image(r.agnostic_mask, "L")) >= 128, size))
             for r in labelled]
    judge = train_attribute_classifier(crops, [attributes[r.garment_id] for r in labelled], steps=steps, seed=seed,
                                       progress=progress)
    judge.save(directory)
    return judge


# ---------------------------------------------------------------------------- data
@dataclass
class TryOnTestSet:
    """A setting's test samples at the model's size: uint8 person (N, H, W, 3), bool masks (N, H, W),
    sketches, the garment images, texts and the expected attributes (of the garment asked for)."""

    records: list[TryOnRecord]
    person: np.ndarray
    mask: np.ndarray
    sketch: np.ndarray
    garments: list[Image.Image]
    texts: list[str]
    attributes: list[dict]

    @classmethod
    def load(cls, records: Sequence[TryOnRecord], size: int, attributes: dict[str, dict]) -> TryOnTestSet:
        def read(source, mode, nearest=False):
            image = load_image(source, mode)
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC)
            return np.asarray(image)

        person = np.stack([read(r.person, "RGB") for r in records])
        mask = np.stack([read(r.agnostic_mask, "L", nearest=True) >= 128 for r in records])
        sketch = np.stack([read(r.sketch, "L", nearest=True) >= 128 if r.sketch is not None
                           else np.zeros((size, size), bool) for r in records])
        return cls(list(records), person, mask, sketch, [load_image(r.garment) for r in records],
                   [r.text for r in records], [attributes.get(r.garment_id, {}) for r in records])


def uint8_images_to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype == bool:
        return torch.from_numpy(array.astype(np.float32))[:, None]
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate_method(model, data: TryOnTestSet, task: str, method: str, config: TryOnEvalConfig,
                    progress: bool = True) -> np.ndarray:
    """uint8 (N, H, W, 3) images of ``method`` for ``task``; pixels outside the masks are the person's."""
    if method == GROUND_TRUTH:
        return data.person
    if method == "copy-paste":
        return np.stack([copy_paste(p, m, np.asarray(g.resize(p.shape[1::-1], Image.Resampling.BICUBIC)))
                         for p, m, g in zip(data.person, data.mask, data.garments, strict=True)])
    out = []
    for start in tqdm(range(0, len(data.records), config.batch_size), desc=f"{task}: {method}", unit="batch",
                      disable=not progress):
        rows = slice(start, start + config.batch_size)
        person, mask = uint8_images_to_tensor(data.person[rows]), uint8_images_to_tensor(data.mask[rows])
        sketch = uint8_images_to_tensor(data.sketch[rows])
        texts = data.texts[rows] if task == "design" else None
        garments = data.garments[rows] if task == "tryon" else None
        # The same noise for every method at a given batch: differences come from the conditioning.
        generator = torch.Generator().manual_seed(config.seed + start)
        common = dict(num_inference_steps=config.steps, scheduler=config.scheduler,
                      guidance_scale=config.guidance, generator=generator)
        if method == "condition-only-pasted":
            images = model.generate(texts, images=garments, **common)
            images = torch.where(mask > 0.5, images, person)
        elif method in ("unifashion", "unifashion-no-sketch"):
            use_sketch = method == "unifashion" and (task == "design" or config.tryon_sketch)
            images = model.generate(texts, images=garments, mask=mask, sketch=sketch if use_sketch else None,
                                    masked_image=person, **common)
        else:
            raise ValueError(f"unknown method {method!r}")
        out.append(_to_uint8(images))
    return np.concatenate(out)


@torch.no_grad()
def image_text_scores(model, crops: np.ndarray, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """The model's ITC score max_q <Z_q, t> of each crop with its text."""
    scores = []
    for start in range(0, len(crops), batch_size):
        image = model.get_image_features(uint8_images_to_tensor(crops[start:start + batch_size])).image_embeds
        text = model.get_text_features(list(texts[start:start + batch_size])).text_embeds
        scores.append(torch.einsum("bqd,bd->bq", image, text).max(dim=1).values.cpu().numpy())
    return np.concatenate(scores)


def _attribute_rows(predicted: list[dict], expected: list[dict]) -> dict[str, float]:
    out = {}
    for name in ("colour", "pattern", "sleeve"):
        pairs = [(p[name], e[name]) for p, e in zip(predicted, expected, strict=True) if name in e]
        if pairs:
            out[f"{name} acc %"] = 100.0 * float(np.mean([a == b for a, b in pairs]))
    return out


def evaluate_setting(model, data: TryOnTestSet, setting: str, real_features: np.ndarray, features, classifier,
                     config: TryOnEvalConfig, table: ResultTable, progress: bool = True,
                     other_models: dict | None = None) -> dict:
    """Generate every method of both tasks for one setting and add their rows; returns the images.

    ``other_models`` ({method name: model}) are run as ``unifashion`` is (e.g. the model before
    its try-on training), beside the methods of ``config``."""
    n = len(data.records)
    other_models = other_models or {}
    generated: dict[str, dict[str, np.ndarray]] = {}
    for task in ("design", "tryon"):
        protocol = (f"{setting}, {n} test persons, {config.scheduler} {config.steps} steps, "
                    f"guidance {config.guidance}")
        methods = (list(config.methods[task]) + list(other_models)
                   + ([GROUND_TRUTH] if setting == "paired" else []))
        generated[task] = {}
        for method in methods:
            if method in other_models:
                images = generate_method(other_models[method], data, task, "unifashion", config, progress)
            else:
                images = generate_method(model, data, task, method, config, progress)
            generated[task][method] = images
            if method != GROUND_TRUTH:
                fake = features(uint8_images_to_tensor(images))
                table.add(f"fig-{task}", protocol, method, "FID-EffLite0", fid(real_features, fake), "test",
                          config.seed)
                table.add(f"fig-{task}", protocol, method, "KID-EffLite0 x1000",
                          1000 * kid(real_features, fake, n_subsets=50, subset_size=min(100, n))[0], "test",
                          config.seed)
            crops = np.stack([garment_crop(im, m, classifier.config.image_size)
                              for im, m in zip(images, data.mask, strict=True)])
            if any(data.attributes):
                predicted = classifier.predict(uint8_images_to_tensor(crops))
                known = [(p, e) for p, e in zip(predicted, data.attributes, strict=True) if e]
                for metric, value in _attribute_rows(*map(list, zip(*known, strict=True))).items():
                    table.add(f"fig-{task}", protocol, method, metric, value, "test", config.seed)
            f1 = [sketch_f1(s, im, m)[2] for s, im, m in zip(data.sketch, images, data.mask, strict=True)]
            if not np.all(np.isnan(f1)):
                table.add(f"fig-{task}", protocol, method, "sketch-F1 %", 100 * float(np.nanmean(f1)), "test",
                          config.seed)
            if task == "design":
                scores = image_text_scores(model, crops, data.texts)
                table.add(f"fig-{task}", protocol, method, "image-text score (model ITC) x100",
                          100 * float(scores.mean()), "test", config.seed)
    return generated


# ---------------------------------------------------------------------------- picture
def _tile(image: np.ndarray | Image.Image, tile: int) -> Image.Image:
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image.resize((tile, tile), Image.Resampling.NEAREST)


def result_grid(data: TryOnTestSet, generated: dict[str, dict[str, np.ndarray]], rows: int = 6,
                tile: int = 96, title: str = "") -> Image.Image:
    """The paper's layout: per row, masked person, caption, sketch, generated (each method),
    ground truth for design; masked person, in-shop garment, generated, ground truth for try-on."""
    from unifashion.visualize import INK, PAPER, caption_block, font, stack

    blocks = []
    masked = data.person.copy()
    masked[data.mask] = 128
    for task in ("design", "tryon"):
        methods = [m for m in generated.get(task, {}) if m != GROUND_TRUTH]
        inputs = ["masked person", "caption", "sketch"] if task == "design" else ["masked person", "garment"]
        headers = inputs + methods + (["ground truth"] if GROUND_TRUTH in generated.get(task, {}) else [])
        n = min(rows, len(data.records))
        width, top = 8 + len(headers) * (tile + 8), 46
        sheet = Image.new("RGB", (width, top + n * (tile + 8) + 4), PAPER)
        draw = ImageDraw.Draw(sheet)
        draw.text((8, 4), f"{'Fashion design (MGD)' if task == 'design' else 'Virtual try-on (VITON-HD)'}"
                  f" {title}", fill=INK, font=font(14))
        for j, header in enumerate(headers):
            caption_block(draw, (8 + j * (tile + 8), 24), header, width_chars=tile // 6, max_lines=2, size=10)
        for i in range(n):
            y = top + i * (tile + 8)
            cells: list = [masked[i]]
            if task == "design":
                cells += [None, data.sketch[i].astype(np.uint8) * 255]
            else:
                cells += [data.garments[i]]
            cells += [generated[task][m][i] for m in methods]
            if GROUND_TRUTH in generated[task]:
                cells.append(data.person[i])
            for j, cell in enumerate(cells):
                x = 8 + j * (tile + 8)
                if cell is None:
                    caption_block(draw, (x, y + 4), f"\u201c{data.texts[i]}\u201d", width_chars=tile // 6,
                                   max_lines=7, size=10)
                else:
                    sheet.paste(_tile(cell, tile), (x, y))
        blocks.append(sheet)
    return stack(blocks)


def save_grid(image: Image.Image, path: str | Path) -> Path:
    from unifashion.visualize import save_png

    return save_png(image, path)
