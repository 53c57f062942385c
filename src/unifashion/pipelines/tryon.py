"""Design and try-on on a person image: the library entry points.

- :func:`design`: ``(person, mask, sketch, text)`` -> the person wearing a garment that follows
  the sketch and the text (MGD's fashion-design task);
- :func:`try_on`: ``(person, mask, garment)`` -> the person wearing the in-shop ``garment``
  (VITON-HD's try-on task);
- :func:`generate_on_person`: the one function both call (and the CLI and the HTTP service).

The model generates at its own size (64 px for the tiny preset); the result is resized to the
person image's size and written only inside the mask: every pixel outside the mask is the
person's own, exactly, at the size the person image came in. Masks: white (>= 128) = the region
to redraw. Sketches: white lines on black, as written by :mod:`unifashion.data.synthetic.worn`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from unifashion.data.records import ImageSource, load_image
from unifashion.pipelines.protocols import SearchModel
from unifashion.settings import GENERATION


def _load(source: ImageSource | None, mode: str) -> Image.Image | None:
    # load_image's errors name a missing or unreadable file.
    return None if source is None else load_image(source, mode)


def check_person_inputs(person: Image.Image, mask: Image.Image, sketch: Image.Image | None = None) -> np.ndarray:
    """The boolean mask at the person's size; ``ValueError`` naming the problem when the mask or
    sketch does not match the person image, or the mask selects nothing."""
    if mask.size != person.size:
        raise ValueError(f"the mask is {mask.size[0]}x{mask.size[1]} but the person image is "
                         f"{person.size[0]}x{person.size[1]}; they must be the same size")
    if sketch is not None and sketch.size != person.size:
        raise ValueError(f"the sketch is {sketch.size[0]}x{sketch.size[1]} but the person image is "
                         f"{person.size[0]}x{person.size[1]}; they must be the same size")
    region = np.asarray(mask.convert("L")) >= 128
    if not region.any():
        raise ValueError("the mask is empty: nothing to redraw (white = the region to redraw)")
    return region


def paste_inside(person: Image.Image, generated: Image.Image, region: np.ndarray) -> Image.Image:
    """``generated`` resized to the person's size, written into the person only where ``region``."""
    if generated.size != person.size:
        generated = generated.resize(person.size, Image.Resampling.BICUBIC)
    out = np.asarray(person.convert("RGB")).copy()
    out[region] = np.asarray(generated.convert("RGB"))[region]
    return Image.fromarray(out)


@torch.no_grad()
def generate_on_person(model: SearchModel, person: ImageSource, mask: ImageSource, *, text: str | None = None,
                       garment: ImageSource | None = None, sketch: ImageSource | None = None,
                       steps: int = GENERATION.steps, scheduler: str = GENERATION.sampler,
                       guidance: float = GENERATION.guidance,
                       generator: torch.Generator | None = None, num_images: int = 1) -> list[Image.Image]:
    """Redraw the ``mask`` region of ``person`` from a text (+ sketch) or a garment image (or both).

    Returns ``num_images`` PIL images at the person image's size; outside the mask they equal the
    person image exactly.
    """
    if text is None and garment is None:
        raise ValueError("design needs a text (and a sketch), try-on a garment image; got neither")
    if model.diffusion is None or model.diffusion.config.extra_channels == 0:
        raise ValueError("this model cannot take a person and a mask: its UNet has no mask/sketch channels")
    person_image = _load(person, "RGB")
    mask_image = _load(mask, "L")
    sketch_image = _load(sketch, "L")
    garment_image = _load(garment, "RGB")
    region = check_person_inputs(person_image, mask_image, sketch_image)
    if sketch_image is not None and not model.diffusion.uses_sketch:
        raise ValueError("this model has no sketch channel (diffusion.extra_channels leaves none)")

    def repeat(image):
        return None if image is None else [image] * num_images

    pixels = model.generate(
        [text] * num_images if text is not None else None,
        images=repeat(garment_image),
        mask=repeat(mask_image),
        sketch=repeat(sketch_image),
        masked_image=repeat(person_image),
        num_inference_steps=steps,
        scheduler=scheduler,
        guidance_scale=float(guidance),
        generator=generator,
    )
    return [paste_inside(person_image, image, region) for image in model.processor.postprocess_images(pixels)]


def design(model: SearchModel, person: ImageSource, mask: ImageSource, sketch: ImageSource | None, text: str,
           **kwargs) -> Image.Image:
    """Fashion design (MGD): the masked region of ``person`` redrawn as a garment following
    ``sketch`` (None: no sketch) and ``text``. ``kwargs`` as :func:`generate_on_person`."""
    return generate_on_person(model, person, mask, text=text, sketch=sketch, **kwargs)[0]


def try_on(model: SearchModel, person: ImageSource, mask: ImageSource, garment: ImageSource,
           sketch: ImageSource | None = None, **kwargs) -> Image.Image:
    """Virtual try-on (VITON-HD): the masked region of ``person`` redrawn wearing ``garment`` (the
    in-shop image). ``kwargs`` as :func:`generate_on_person`."""
    return generate_on_person(model, person, mask, garment=garment, sketch=sketch, **kwargs)[0]
