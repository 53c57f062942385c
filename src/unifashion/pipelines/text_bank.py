"""The catalogue texts that image-to-text ranks, their embeddings, and the file that keeps them.

Which texts: for every item in the index, each of its stored captions (one per style given at
indexing) and the caption the model generated for it when it was indexed (style
``"generated"``). Identical texts are ranked once and list every (item, style) they came from.

Embedding a million texts takes the model about an hour on a small CPU, so a new process (a
restarted service, a second worker) must not redo it. :class:`TextEmbeddingFile` keeps the
embeddings of one model in the index folder (``text-embeddings/<model>.npz``, no pickles); after
the index changes only texts not seen before are embedded, and the file is rewritten atomically
(a crash leaves the previous file). Beside it, ``<model>.text-ivf.npz`` keeps the IVF of a bank
above ``text_ann.BRUTE_FORCE_TEXTS`` texts (about 20 s to train and fill at 1M texts): a new
process reads it back, as it is when the texts are the same, and refilled with the new ones (the
trained quantisers kept) when they changed. A file that cannot be read is ignored and rebuilt; a
folder that cannot be written (a read-only index) only costs the re-embedding and the training.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unifashion.atomic import atomic_writer
from unifashion.index.protocols import CatalogueIndexProtocol
from unifashion.index.text_ann import BRUTE_FORCE_TEXTS, TextIndex, deserialize_ann

#: Style name under which image-to-text lists the model's own (fusion) caption of an item.
GENERATED_STYLE = "generated"

#: Folder (inside the index folder) that holds the text embedding files, one per model.
TEXT_EMBEDDINGS_DIR = "text-embeddings"

# Texts embedded per model call when the bank is (re)built.
_TEXT_BATCH = 64

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSource:
    item_id: str
    style: str


class TextEmbeddingFile:
    """The embeddings of catalogue texts by one model (``identity``: its weights identity), in one
    ``.npz`` of UTF-8 text bytes, offsets and float32 vectors."""

    def __init__(self, folder: str | os.PathLike, identity: str):
        self.identity = identity
        name = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]
        self.path = Path(folder) / TEXT_EMBEDDINGS_DIR / f"{name}.npz"

    def load(self) -> dict[str, np.ndarray]:
        """The stored embeddings by text; empty when there is no readable file of this model."""
        if not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if bytes(data["identity"]).decode("utf-8") != self.identity:
                    return {}
                raw, offsets, vectors = bytes(data["text_bytes"]), data["offsets"], data["vectors"]
                if len(offsets) != len(vectors) + 1 or offsets[-1] != len(raw):
                    raise ValueError("offsets do not match the texts")
                texts = [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(vectors))]
                return dict(zip(texts, vectors.astype(np.float32, copy=False), strict=True))
        except Exception as exc:  # noqa: BLE001 - a cache: anything unreadable is rebuilt
            logger.warning("ignoring the unreadable text embedding file %s (%s); texts are embedded again",
                           self.path, exc)
            return {}

    def save(self, embedding: dict[str, np.ndarray], dim: int) -> bool:
        """Write ``embedding`` (replacing the file atomically); False if the folder is not writable."""
        encoded = [t.encode("utf-8") for t in embedding]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        vectors = (np.stack(list(embedding.values())).astype(np.float32) if embedding
                   else np.zeros((0, dim), dtype=np.float32))
        return _write_npz(self.path, "text embeddings", identity=_utf8(self.identity),
                          text_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets=offsets,
                          vectors=vectors)

    @property
    def ann_path(self) -> Path:
        """The file of the bank's text IVF (beside the embeddings), so a new process does not
        train it again."""
        return self.path.with_name(f"{self.path.stem}.text-ivf.npz")

    def load_ann(self) -> SavedTextANN | None:
        """The IVF :meth:`save_ann` wrote for this model; None when there is no readable one."""
        if not self.ann_path.is_file():
            return None
        try:
            with np.load(self.ann_path, allow_pickle=False) as data:
                if bytes(data["identity"]).decode("utf-8") != self.identity:
                    return None
                return SavedTextANN(deserialize_ann(data["ann"]), int(data["trained_on"]),
                                    bytes(data["fingerprint"]).decode("ascii"))
        except Exception as exc:  # noqa: BLE001 - a cache: anything unreadable is rebuilt
            logger.warning("ignoring the unreadable text IVF file %s (%s); it is trained again", self.ann_path, exc)
            return None

    def save_ann(self, text_index: TextIndex, fingerprint: str) -> bool:
        """Write the bank's IVF (atomically), tagged with the ``fingerprint`` of its texts."""
        return _write_npz(self.ann_path, "the text IVF", identity=_utf8(self.identity),
                          ann=text_index.serialized_ann(), trained_on=np.int64(text_index.trained_on),
                          fingerprint=_utf8(fingerprint))


@dataclass(frozen=True)
class SavedTextANN:
    ann: object  # the FAISS IVF
    trained_on: int  # texts its quantisers were trained on
    fingerprint: str  # texts_fingerprint of the texts it holds, in order


def texts_fingerprint(identity: str, texts: Sequence[str]) -> str:
    """Names the vectors of ``texts`` in this order by the model ``identity`` (which determines
    each text's vector): an IVF saved under the same fingerprint holds exactly them."""
    digest = hashlib.sha256(identity.encode("utf-8"))
    for text in texts:
        digest.update(b"\0")
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def _utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _write_npz(path: Path, what: str, **arrays: np.ndarray) -> bool:
    """``arrays`` into ``path`` as one ``.npz``, replacing it atomically (a crash leaves the previous
    file); False if it cannot be written (a folder that is not writable, a full disk)."""
    try:
        path.parent.mkdir(exist_ok=True)
        with atomic_writer(path) as out:
            np.savez(out, **arrays)
    except OSError as exc:
        logger.info("%s not kept (%s): a new process computes it again", what, exc)
        return False
    return True


class TextBank:
    """The texts of one index generation, with their embeddings and the :class:`TextIndex` that
    searches them. Embeddings are kept per text across generations (and in ``embedding_file``)."""

    def __init__(self, embedding_file: TextEmbeddingFile | None = None) -> None:
        self.generation = -1
        self.texts: list[str] = []
        self.sources: list[tuple[TextSource, ...]] = []
        self.text_index = TextIndex(np.zeros((0, 0), dtype=np.float32))
        self._file = embedding_file
        self._embedding: dict[str, np.ndarray] | None = None  # loaded on first refresh

    def refresh(self, index: CatalogueIndexProtocol, embed: Callable[[Sequence[str]], np.ndarray]) -> None:
        """Bring the bank up to ``index``'s committed generation (no work if it is current)."""
        generation = index.generation
        if generation == self.generation:
            return
        if self._embedding is None:
            self._embedding = self._file.load() if self._file is not None else {}
        by_text: dict[str, list[TextSource]] = {}
        for metadata in index.all_metadata():
            texts = list(metadata.captions.items())
            if metadata.fusion_caption:
                texts.append((GENERATED_STYLE, metadata.fusion_caption))
            for style, text in texts:
                if text.strip():
                    by_text.setdefault(text, []).append(TextSource(metadata.item_id, style))
        new = [t for t in by_text if t not in self._embedding]
        for start in range(0, len(new), _TEXT_BATCH):
            chunk = new[start:start + _TEXT_BATCH]
            for text, vector in zip(chunk, embed(chunk), strict=True):
                self._embedding[text] = vector
        # Forget texts no item carries any more, so that the cache does not grow without bound.
        forgotten = len(self._embedding) > len(by_text)
        self._embedding = {t: self._embedding[t] for t in by_text}
        if self._file is not None and (new or forgotten):
            self._file.save(self._embedding, index.dim)
        self.texts = list(by_text)
        self.sources = [tuple(by_text[t]) for t in self.texts]
        matrix = (np.stack([self._embedding[t] for t in self.texts]) if self.texts
                  else np.zeros((0, index.dim), dtype=np.float32))
        # Exhaustive below text_ann.BRUTE_FORCE_TEXTS texts; an IVF above, read back from the
        # index folder when one was saved (used as it is for the same texts, refilled otherwise).
        saved, fingerprint = None, ""
        if self._file is not None and len(self.texts) > BRUTE_FORCE_TEXTS:
            saved = self._file.load_ann()
            fingerprint = texts_fingerprint(self._file.identity, self.texts)
        exact = saved is not None and saved.fingerprint == fingerprint
        self.text_index = TextIndex(matrix, ann=saved.ann if saved else None,
                                    ann_trained_on=saved.trained_on if saved else 0, ann_holds_matrix=exact)
        if self._file is not None and self.text_index.ann is not None and not exact:
            self._file.save_ann(self.text_index, fingerprint)
        self.generation = generation
