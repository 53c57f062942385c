"""Search, captioning and generation over one catalogue index with one UniFashion model.

:class:`SearchPipeline` is what the CLI and the HTTP service call. Each task is one model call
plus, for retrieval, one index search:

==================  ==========================================================================
text_to_images      e = encode_text(text); items by ``max_q <e, Z_q>`` (CMR text -> image)
image_to_texts      Z = encode_image(image); catalogue texts by ``max_q <Z_q, e_text>``
                    (CMR image -> text)
composed            e = encode_composed(image, text); items by ``max_q <e, Z_q> + <e, Z_C>``
                    (CIR with the paper's caption fusion; ``fusion=False`` drops the second term)
caption             the model's caption in a style ("short", "professional", "detailed")
generate            images from text, image + text, or person + mask (+ sketch) + text
==================  ==========================================================================

Which texts image-to-text ranks. The catalogue's own texts: for every item in the index, each of
its stored captions (one per style given at indexing, e.g. the embedded catalogue's "short",
"professional" and "detailed") and the caption the model generated for it when it was indexed
(style ``"generated"``). Identical texts are ranked once and list every (item, style) they came
from. They are embedded on first use, kept in memory and in a file of the index folder
(pipelines/text_bank.py), so that a restarted service does not embed them again; after the index
changes, only texts not seen before are embedded.

The model is not thread-safe (and one CPU forward pass at a time is fastest on a small machine),
so every model call runs under ``self.lock``; index searches run outside it (the index is
thread-safe itself). Generation runs under ``self.generation_lock``, which is ``self.lock``
until :meth:`SearchPipeline.separate_generation` gives generation its own copy of the model's
modules (sharing every weight tensor, so it costs little memory) and its own lock: then a long
generation does not hold up searches.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unifashion import configuration
from unifashion.atomic import atomic_write
from unifashion.data.records import CAPTION_STYLES, ImageSource, ItemRecord, load_image
from unifashion.index import (
    CatalogueIndexProtocol,
    DuplicateItemError,
    Hit,
    ItemMetadata,
    MilvusBackend,
    open_index,
)
from unifashion.index.text_ann import rank_exact
from unifashion.index.validation import check_positive_int
from unifashion.pipelines.indexing import CatalogueBuilder, index_metadata
from unifashion.pipelines.protocols import SearchModel
from unifashion.pipelines.text_bank import TextBank, TextEmbeddingFile, TextSource
from unifashion.pipelines.tryon import generate_on_person
from unifashion.settings import GENERATION, SAMPLERS, SEARCH

#: Folder (inside the index folder) where images of items added through the pipeline are kept.
IMAGES_DIR = "images"

@dataclass(frozen=True)
class TextHit:
    """One image-to-text result: a catalogue text, its score, and the items it describes."""

    text: str
    score: float
    rank: int
    sources: tuple[TextSource, ...]

    def to_dict(self) -> dict[str, Any]:
        return configuration.to_dict(self)


def _image_file_name(item_id: str, png: bytes) -> str:
    """The file name of an item's saved image: any id maps to a safe name (ids may hold '/' or
    '..'), and a replaced image gets a new name, so the old file stays valid until the index
    no longer names it."""
    id_part = hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:24]
    return f"{id_part}-{hashlib.sha256(png).hexdigest()[:16]}.png"


def _check_top_k(top_k: Any) -> int:
    check_positive_int(top_k, "top_k")  # the index's own check (image -> texts searches no index)
    return int(top_k)


def _check_text(text: Any, name: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return text.strip()


def rank_texts(text_matrix: np.ndarray, image_queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``text_matrix`` (T, D) by ``max_q <Z_q, e_text>`` for one image's ``image_queries``
    (Q, D), as the model's score(), scoring every row: the ``top_k`` row numbers, best first, and
    their scores. (The pipeline searches a :class:`TextIndex`, which scores a pool of ANN hits.)"""
    return rank_exact(text_matrix, image_queries, top_k)


class SearchPipeline:
    """Retrieval, captioning, generation and catalogue updates with one model over one index.

    Build one with ``SearchPipeline(model, CatalogueIndex.open(folder))`` or
    :meth:`SearchPipeline.open`; ``SearchPipeline(model, None)`` only captions and generates.
    Images may be PIL images, paths, encoded bytes or uint8 arrays.
    """

    def __init__(self, model: SearchModel, index: CatalogueIndexProtocol | None, *, batch_size: int = 32):
        self.model = model.eval()
        self._index = index
        self.lock = threading.RLock()  # held around every model call
        self.generation_lock = self.lock  # held around generation (see separate_generation)
        self._generation_model = self.model
        self._write_lock = threading.Lock()  # one add/delete at a time (check, store image, index)
        self._bank_lock = threading.Lock()
        self._bank = TextBank()
        # Items added through the pipeline are embedded as the index's items are: with captions or without.
        self.builder = CatalogueBuilder(model, batch_size=batch_size, progress=False, lock=self.lock,
                                        captions=index.captions if index is not None else True)
        if index is not None:
            self.builder.check_index(index)
            identity = self.builder.model_identity
            if identity is not None:  # kept beside the index, so that a new process does not embed them again
                self._bank = TextBank(TextEmbeddingFile(index.folder, identity))

    @classmethod
    def open(cls, model: SearchModel, index_dir: str | os.PathLike, read_only: bool = False,
             backend: MilvusBackend | None = None, break_lock: bool = False, **kwargs) -> SearchPipeline:
        """Open the index in ``index_dir`` (either backend; ``backend`` overrides a Milvus-backed
        folder's record; ``break_lock``: see :func:`~unifashion.index.open_index`) with ``model``."""
        index = open_index(index_dir, read_only=read_only, backend=backend, break_lock=break_lock)
        try:
            return cls(model, index, **kwargs)
        except BaseException:  # e.g. a model that did not build the index: release it
            index.close()
            raise

    @property
    def index(self) -> CatalogueIndexProtocol:
        """The catalogue index (a pipeline made with ``index=None`` only captions and generates)."""
        if self._index is None:
            raise RuntimeError("this pipeline has no catalogue index: it can caption and generate, not search")
        return self._index

    def separate_generation(self) -> None:
        """Run generation on its own copy of the model's modules, under its own lock. The copy
        shares every parameter and buffer with the model (the weights are read-only in eval), so
        it costs little memory; its other state (schedulers, tokenizers) is its own, so the two
        can run at the same time."""
        if self._generation_model is not self.model:
            return
        shared = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
        self._generation_model = copy.deepcopy(self.model, shared).eval()
        self.generation_lock = threading.RLock()

    def texts_ready(self) -> bool:
        """Whether the catalogue texts that image-to-text ranks are embedded for the current index."""
        return self._index is not None and self._bank.generation == self._index.generation

    def prepare_texts(self) -> None:
        """Embed the catalogue texts for image-to-text now (the first call would do it)."""
        if self._index is not None:
            with self._bank_lock:
                self._bank.refresh(self._index, self._embed_texts)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()

    def __enter__(self) -> SearchPipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- retrieval ---------------------------------------------------------------------------

    def text_to_images(self, text: str, top_k: int = 10, category: str | None = None) -> list[Hit]:
        """Catalogue items for a text query, best first (CMR text -> image)."""
        text, top_k, index = _check_text(text), _check_top_k(top_k), self.index
        with self.lock:
            query = self.model.encode_text([text])[0].float().cpu().numpy()
        return index.search(query, top_k, category=category)

    def image_to_texts(self, image: ImageSource, top_k: int = 10) -> list[TextHit]:
        """Catalogue texts for an image, best first (CMR image -> text); see the module docstring
        for which texts are ranked."""
        top_k, index = _check_top_k(top_k), self.index
        picture = load_image(image)
        with self.lock:
            z = self.model.encode_image([picture])[0].float().cpu().numpy()  # (Q, D)
        with self._bank_lock:
            self._bank.refresh(index, self._embed_texts)
            texts, sources, text_index = self._bank.texts, self._bank.sources, self._bank.text_index
        best, scores = text_index.search(z, top_k)
        return [TextHit(texts[i], float(score), rank, sources[i])
                for rank, (i, score) in enumerate(zip(best, scores, strict=True), 1)]

    def composed(self, image: ImageSource, text: str, top_k: int = 10, fusion: bool = True,
                 category: str | None = None) -> list[Hit]:
        """Items that look like ``image`` changed as ``text`` says (CIR), best first.

        With ``fusion`` (the paper's scoring) each item's score adds the inner product of the
        query with the embedding of the item's generated caption (``settings.SEARCH.fusion_weight``); an index
        built without captions has none to add, and is searched without (see :meth:`uses_fusion`).
        """
        text, top_k, index = _check_text(text), _check_top_k(top_k), self.index
        picture = load_image(image)
        with self.lock:
            query = self.model.encode_composed([picture], [text])[0].float().cpu().numpy()
        weight = SEARCH.fusion_weight if self.uses_fusion(fusion) else 0.0
        return index.search(query, top_k, category=category, fusion_weight=weight)

    def uses_fusion(self, fusion: bool) -> bool:
        """Whether a composed search asked for ``fusion`` adds caption fusion: only where the
        index's items have caption vectors."""
        return bool(fusion) and self.index.captions

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self.lock:
            return self.model.encode_text(list(texts)).float().cpu().numpy()

    # -- captioning and generation -----------------------------------------------------------

    def caption(self, image: ImageSource, style: str = "detailed") -> str:
        """The model's caption of an image in ``style`` ("short", "professional", "detailed")."""
        if style not in CAPTION_STYLES:
            raise ValueError(f"unknown caption style {style!r}; choose one of {', '.join(CAPTION_STYLES)}")
        picture = load_image(image)
        with self.lock:
            return self.model.caption([picture], style=style)[0]

    def generate(self, text: str | None = None, image: ImageSource | None = None, mask: ImageSource | None = None,
                 sketch: ImageSource | None = None, person: ImageSource | None = None, *,
                 steps: int = GENERATION.steps, scheduler: str = GENERATION.sampler,
                 guidance: float = GENERATION.guidance, seed: int | None = 0,
                 num_images: int = 1) -> list[Image.Image]:
        """Generate ``num_images`` images (PIL: the model's generation size; for design / try-on,
        the person image's size, see :mod:`unifashion.pipelines.tryon`).

        * text -> image: ``text``;
        * composed generation: ``image`` (reference garment) + ``text`` (modification);
        * design / try-on: ``person`` + ``mask`` (white = the region to redraw) and optionally a
          garment ``sketch``, with ``text`` and/or a garment ``image``. Pixels outside the mask
          are the person's.

        ``seed`` makes the result reproducible (None: a random one).
        """
        if text is not None:
            text = _check_text(text)
        if text is None and image is None:
            raise ValueError("generation needs a text, a reference image, or both")
        if (mask is None) != (person is None):
            raise ValueError("design / try-on needs both a person image and a mask (white = region to redraw)")
        if sketch is not None and mask is None:
            raise ValueError("a sketch needs a person image and a mask to draw it into")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if scheduler not in SAMPLERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SAMPLERS)}")
        if not isinstance(guidance, (int, float)) or isinstance(guidance, bool) or not np.isfinite(guidance) \
                or guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance!r}")
        if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))

        model = self._generation_model
        if person is not None:  # design / try-on: one implementation, at the person's size
            with self.generation_lock:
                return generate_on_person(model, person, mask, text=text, garment=image, sketch=sketch,
                                          steps=steps, scheduler=scheduler, guidance=float(guidance),
                                          generator=generator, num_images=num_images)

        def repeat(source: ImageSource | None, mode: str = "RGB") -> list[Image.Image] | None:
            return None if source is None else [load_image(source, mode)] * num_images

        with self.generation_lock:
            pixels = model.generate(
                [text] * num_images if text is not None else None,
                images=repeat(image),
                mask=repeat(mask, "L"),
                sketch=repeat(sketch, "L"),
                masked_image=repeat(person),
                num_inference_steps=steps,
                scheduler=scheduler,
                guidance_scale=float(guidance),
                generator=generator,
            )
        return model.processor.postprocess_images(pixels)

    # -- catalogue updates -------------------------------------------------------------------

    def add_items(self, records: Sequence[ItemRecord], *, replace: bool = False) -> list[ItemMetadata]:
        """Embed, caption and add items (``replace``: ids already present are replaced).

        Images given as files are referenced by path; images given in memory (PIL, bytes,
        arrays) are saved as PNG under the index folder's ``images/``, so that the service can
        show them. Raises :class:`DuplicateItemError` for ids already present unless ``replace``.
        """
        records = list(records)
        with self._write_lock:
            index = self.index
            present = [r.item_id for r in records if r.item_id in index]
            if present and not replace:
                raise DuplicateItemError(f"already in the index: {', '.join(repr(i) for i in present[:5])}")
            replaced_images = {self.image_path(i) for i in present}
            metadata, written = [], []
            try:
                for record in records:
                    if isinstance(record.image, (str, os.PathLike)):
                        metadata.append(index_metadata(record))
                        continue
                    buffer = io.BytesIO()
                    load_image(record.image).save(buffer, format="PNG")
                    relative = Path(IMAGES_DIR) / _image_file_name(record.item_id, buffer.getvalue())
                    target = index.folder / relative
                    if not target.is_file():  # the same id with the same image may be re-added
                        target.parent.mkdir(exist_ok=True)
                        atomic_write(target, buffer.getvalue())  # readers never see a half-written image
                        written.append(target)
                    metadata.append(index_metadata(record, image_path=str(relative)))
                self.builder.add(index, records, upsert=replace, metadata=metadata)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            # The replaced items' saved images, now that no committed item names them.
            kept = {self.image_path(r.item_id) for r in records}
            self._remove_saved_images(replaced_images - kept)
        return [index.get(r.item_id) for r in records]

    def add_item(self, item_id: str, image: ImageSource, *, category: str = "", captions: dict[str, str] | None = None,
                 attributes: dict[str, Any] | None = None, replace: bool = False) -> ItemMetadata:
        """Add one item; see :meth:`add_items`."""
        record = ItemRecord(item_id=item_id, image=image, category=category, captions=dict(captions or {}),
                            attributes=dict(attributes or {}), source="pipeline")
        return self.add_items([record], replace=replace)[0]

    def delete_items(self, ids: Sequence[str]) -> None:
        """Delete items (:class:`UnknownItemError` if any is absent; then nothing is deleted),
        and the images that :meth:`add_items` saved for them."""
        ids = list(ids)
        with self._write_lock:
            images = {self.image_path(i) for i in ids if i in self.index}
            self.index.delete(ids)
            self._remove_saved_images(images)

    def _remove_saved_images(self, paths) -> None:
        """Delete images that :meth:`add_items` saved (never files the catalogue referenced)."""
        images_dir = (self.index.folder / IMAGES_DIR).resolve()
        for path in paths:
            if path is not None and path.parent == images_dir:
                path.unlink(missing_ok=True)

    # -- items -------------------------------------------------------------------------------

    def get(self, item_id: str) -> ItemMetadata:
        """An item's metadata (:class:`UnknownItemError` if absent)."""
        return self.index.get(item_id)

    def image_path(self, item_id: str) -> Path | None:
        """The file of an item's image (relative paths are relative to the index folder), or
        None when the item was indexed without one. Raises :class:`UnknownItemError`."""
        stored = self.index.get(item_id).image_path
        if not stored:
            return None
        path = Path(stored)
        return (path if path.is_absolute() else self.index.folder / path).resolve()
