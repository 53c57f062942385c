"""Building a catalogue index from product images: embed, caption, store.

For every item the builder computes, in batches:

- Z, the model's ``num_queries`` image embeddings (``encode_image``), the vectors that max-sim
  search ranks;
- the model's own caption of the image in the ``"detailed"`` style (``caption``), stored with the
  item as its ``fusion_caption``;
- that caption's text embedding (``encode_text``), the item's caption-fusion vector Z_C, which
  composed retrieval adds to the score (``max_q <e, Z_q> + <e, Z_C>``, the paper's caption fusion).

``captions=False`` skips the last two (an index without caption fusion): captioning costs most
of an item's indexing time (benchmarks/bench_indexing_throughput.py), so a catalogue that needs
speed more than fusion indexes at about the model's bare ``encode_image`` rate.

Sources it reads (:func:`load_item_records`):

- a list of :class:`~unifashion.data.records.ItemRecord`;
- a folder of the embedded catalogue (``catalogue.json`` + ``items.jsonl``, written by
  ``unifashion data build``), optionally one split of it;
- a folder of images with a metadata file ``metadata.jsonl`` or ``metadata.csv`` (or the path of
  such a file), one item per line or row (see :func:`read_metadata_file`).

Builds are resumable: vectors are committed every ``commit_every`` items, and building into an
existing index skips the ids it already holds, so a stopped build continues where it stopped
when run again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unifashion.data.folder import load_item_records
from unifashion.data.records import ItemRecord, load_image
from unifashion.index import (
    CatalogueIndexProtocol,
    MilvusBackend,
    ModelMismatchError,
    create_index,
    index_exists,
    open_index,
)
from unifashion.pipelines.protocols import CatalogueEmbedder

# Items embedded between two commits: each commit writes one vector segment and one FAISS delta
# (both in proportion to the items it adds), so this trades the number of files against the work
# a stopped build repeats.
_COMMIT_EVERY = 1024



@dataclass(frozen=True)
class EmbeddedItems:
    """What the builder computes for a batch of images."""

    multi_vectors: np.ndarray  # (B, num_queries, dim) float32, L2-normalised
    fusion_vectors: np.ndarray | None  # (B, dim) float32, text embeddings of the generated captions
    fusion_captions: list[str] | None  # the generated captions (both None: indexed without captions)


@dataclass(frozen=True)
class BuildReport:
    """The outcome of :meth:`CatalogueBuilder.build`."""

    index_dir: Path
    added: int  # items embedded and stored by this call
    skipped: int  # items the index already held (a resumed build)
    total: int  # items in the index afterwards
    seconds: float

    def __str__(self) -> str:
        rate = self.added / self.seconds if self.seconds > 0 else 0.0
        return (f"indexed {self.added} items ({self.skipped} already present) into {self.index_dir} "
                f"in {self.seconds:.1f} s ({rate:.1f} items/s); the index holds {self.total} items")


def index_metadata(record: ItemRecord, image_path: str | None = None) -> dict[str, Any]:
    """The metadata the index stores for a record: an image given as a file is stored as its
    absolute path, so that the index can be served from any working directory."""
    if image_path is None:
        image_path = str(Path(record.image).resolve()) if isinstance(record.image, (str, os.PathLike)) else ""
    return {"category": record.category, "captions": dict(record.captions), "attributes": dict(record.attributes),
            "image_path": image_path}


# -- the builder -----------------------------------------------------------------------------


class CatalogueBuilder:
    """Embeds catalogue items with a UniFashion model and stores them in a catalogue index
    (either backend: :class:`~unifashion.index.CatalogueIndexProtocol`).

    ``lock``, when given, is held around every model call (the service shares one model between
    request threads). ``captions=False``: no generated captions, no caption-fusion vectors; it
    builds (and adds to) indexes created without captions.
    """

    def __init__(self, model: CatalogueEmbedder, batch_size: int = 32, progress: bool = True,
                 lock: threading.Lock | threading.RLock | None = None, captions: bool = True):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(captions, bool):
            raise ValueError(f"captions must be True or False, got {captions!r}")
        self.captions = captions
        self.model = model.eval()
        self.batch_size = batch_size
        self.progress = progress
        self._lock = lock if lock is not None else nullcontext()
        self._identity: str | None = None

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.embed_dim)

    @property
    def num_queries(self) -> int:
        return int(self.model.num_queries)

    def embed(self, images: Sequence[Any]) -> EmbeddedItems:
        """Z, generated captions and their embeddings for one batch of (PIL) images.

        The vision encoder and the Q-Former run once per image: their queries serve both Z and
        the captioning (which ``encode_image`` followed by ``encode_captions`` of the images would
        compute twice).
        The captions of a batch are decoded together (greedy, with the LM's KV cache). Without
        captions only Z is computed."""
        if not self.captions:
            with self._lock, torch.no_grad():
                multi = self.model.encode_image(list(images))
            return EmbeddedItems(multi.float().cpu().numpy(), None, None)
        with self._lock, torch.no_grad():
            features = self.model.get_image_features(list(images))
            captions, fusion = self.model.encode_captions(query_output=features.query_output)
        return EmbeddedItems(features.image_embeds.float().cpu().numpy(), fusion.float().cpu().numpy(),
                             list(captions))

    @property
    def model_identity(self) -> str | None:
        """The model's :meth:`~unifashion.models.UniFashion.weights_identity` (None for a model
        without one), computed once: the weights do not change while the builder serves."""
        if self._identity is None and hasattr(self.model, "weights_identity"):
            with self._lock:
                self._identity = self.model.weights_identity()
        return self._identity

    def check_index(self, index: CatalogueIndexProtocol) -> None:
        """Raise if the index was not made by this model: another vector shape (ValueError), or
        another recorded identity (:class:`ModelMismatchError`; two untrained models of one preset
        have the same shapes, and each other's vectors mean nothing to them). An empty writable
        index that records no identity gets this model's; one that holds items but records none
        (filled without a builder, e.g. from vectors) cannot be checked and is taken as it is."""
        if index.captions != self.captions:
            made, want = ("with", "without") if index.captions else ("without", "with")
            raise ValueError(f"the index at {index.folder} was built {made} captions; this builder indexes {want} "
                             f"them: build {'with' if index.captions else 'without'} captions to add to it, or "
                             f"build a new index")
        if (index.num_queries, index.dim) != (self.num_queries, self.embed_dim):
            raise ValueError(
                f"the index at {index.folder} stores {index.num_queries} x {index.dim} vectors per item; this model "
                f"makes {self.num_queries} x {self.embed_dim}: build a new index for this model"
            )
        identity, recorded = self.model_identity, index.model_identity
        if identity is None:
            return
        if recorded is None:
            if not index.read_only and len(index) == 0:
                index.record_model_identity(identity)
            return
        if recorded != identity:
            raise ModelMismatchError(
                f"the index at {index.folder} was built by a different model (weights {recorded[:12]}...; this "
                f"model's are {identity[:12]}...): search it with the model that built it, or build a new index "
                f"with this one"
            )

    def add(self, index: CatalogueIndexProtocol, records: Sequence[ItemRecord], *, upsert: bool = False,
            metadata: Sequence[dict[str, Any]] | None = None, commit_every: int = _COMMIT_EVERY) -> int:
        """Embed ``records`` and add them to ``index`` (``upsert``: replace ids it holds).

        Committed every ``commit_every`` items, so a failure loses at most that much work.
        ``metadata`` overrides :func:`index_metadata` per record. Returns the number added.
        """
        self.check_index(index)
        if metadata is not None and len(metadata) != len(records):
            raise ValueError(f"{len(metadata)} metadata entries for {len(records)} records")
        store = index.upsert if upsert else index.add
        bar = tqdm(total=len(records), desc="embedding catalogue", unit="item", disable=not self.progress)
        pending: list[tuple[int, EmbeddedItems]] = []  # (position of the batch's first record, embeddings)
        pending_count = 0

        def flush() -> None:
            nonlocal pending, pending_count
            if not pending:
                return
            start = pending[0][0]
            chunk = records[start:start + pending_count]
            chunk_meta = metadata[start:start + pending_count] if metadata is not None else [
                index_metadata(r) for r in chunk]
            captioned = self.captions
            store([r.item_id for r in chunk],
                  np.concatenate([e.multi_vectors for _, e in pending]),
                  np.concatenate([e.fusion_vectors for _, e in pending]) if captioned else None,
                  chunk_meta,
                  fusion_captions=[c for _, e in pending for c in e.fusion_captions] if captioned else None,
                  commit=True, progress=False)
            pending, pending_count = [], 0

        try:
            for start in range(0, len(records), self.batch_size):
                batch = records[start:start + self.batch_size]
                embedded = self.embed([load_image(r.image) for r in batch])
                pending.append((start, embedded))
                pending_count += len(batch)
                bar.update(len(batch))
                if pending_count >= commit_every:
                    flush()
            flush()
        finally:
            bar.close()
        return len(records)

    def add_embedded(self, index: CatalogueIndexProtocol, records: Sequence[ItemRecord], embeddings: str | os.PathLike,
                     held: set[str] | None = None) -> int:
        """Add ``records`` to ``index`` from the vectors :func:`~unifashion.pipelines.embedding.embed_catalogue`
        wrote to ``embeddings`` for them (their ids, in order, must be the embedded ones), without
        running the model; items the index already holds (``held``, else read from the index once)
        are skipped. One commit per shard."""
        from unifashion.pipelines.embedding import read_embeddings

        self.check_index(index)
        manifest, shards = read_embeddings(embeddings, [r.item_id for r in records])
        if manifest.captions != self.captions:
            made = "with" if manifest.captions else "without"
            raise ValueError(f"the embeddings at {embeddings} were made {made} captions; this builder indexes "
                             f"{'without' if manifest.captions else 'with'} them")
        if (manifest.num_queries, manifest.dim) != (self.num_queries, self.embed_dim):
            raise ValueError(f"the embeddings at {embeddings} are {manifest.num_queries} x {manifest.dim} per item; "
                             f"this model makes {self.num_queries} x {self.embed_dim}")
        identity = self.model_identity
        if manifest.model_identity is not None and identity is not None and manifest.model_identity != identity:
            raise ModelMismatchError(f"the embeddings at {embeddings} were made by a different model (weights "
                                     f"{manifest.model_identity[:12]}...; this model's are {identity[:12]}...)")
        by_id = {r.item_id: r for r in records}
        # One read of the index's ids, not a lookup per item (each a query on Milvus); a copy, as it
        # grows with every shard added.
        held = set(index.ids() if held is None else held)
        added = 0
        with tqdm(total=len(records), desc="storing embeddings", unit="item", disable=not self.progress) as bar:
            for shard in shards:
                keep = [i for i, item_id in enumerate(shard.ids) if item_id not in held]
                if keep:
                    rows = np.asarray(keep)
                    index.add([shard.ids[i] for i in keep], shard.multi_vectors[rows],
                              shard.fusion_vectors[rows] if shard.fusion_vectors is not None else None,
                              [index_metadata(by_id[shard.ids[i]]) for i in keep],
                              fusion_captions=[shard.fusion_captions[i] for i in keep] if self.captions else None,
                              normalize=True, commit=True, progress=False)
                    added += len(keep)
                    held.update(shard.ids[i] for i in keep)
                bar.update(len(shard.ids))
        return added

    def build(self, source: str | os.PathLike | Sequence[ItemRecord], index_dir: str | os.PathLike, *,
              split: str | None = None, ann: str = "vectors", resume: bool = True,
              backend: MilvusBackend | None = None, embeddings: str | os.PathLike | None = None,
              break_lock: bool = False, **ann_options) -> BuildReport:
        """Index every item of ``source`` into ``index_dir`` (created if needed).

        With ``resume`` (the default) an existing index is opened and items it already holds are
        skipped; without, an existing index is an error. ``ann`` and ``ann_options`` (nlist,
        nprobe, pq_m) configure a new index (see :meth:`CatalogueIndex.create`). ``backend``: a
        :class:`MilvusBackend` stores the index in Milvus (the folder then records where).
        ``embeddings``: a folder that ``unifashion embed`` wrote for ``source`` (pipelines/embedding.py):
        its vectors are stored instead of embedding the items here. ``break_lock``: see
        :func:`~unifashion.index.open_index`.
        """
        started = time.perf_counter()
        records = load_item_records(source, split)
        seen: set[str] = set()
        for record in records:
            if record.item_id in seen:
                raise ValueError(f"the source lists the id {record.item_id!r} more than once")
            seen.add(record.item_id)
        folder = Path(index_dir)
        if index_exists(folder):
            if not resume:
                raise FileExistsError(f"{folder} already holds an index; pass resume=True to add to it")
            index = open_index(folder, backend=backend, break_lock=break_lock)
        else:
            index = create_index(folder, backend, dim=self.embed_dim, num_queries=self.num_queries, ann=ann,
                                 captions=self.captions, **ann_options)
        with index:
            self.check_index(index)
            held = set(index.ids())
            todo = [r for r in records if r.item_id not in held]
            if embeddings is not None:
                self.add_embedded(index, records, embeddings, held=held)
            else:
                self.add(index, todo)
            total = len(index)
        return BuildReport(folder, added=len(todo), skipped=len(records) - len(todo), total=total,
                           seconds=time.perf_counter() - started)


def build_index(model: CatalogueEmbedder, source: str | os.PathLike | Sequence[ItemRecord],
                index_dir: str | os.PathLike, *, split: str | None = None, batch_size: int = 32,
                progress: bool = True, ann: str = "vectors",
                resume: bool = True, backend: MilvusBackend | None = None, captions: bool = True,
                embeddings: str | os.PathLike | None = None, break_lock: bool = False,
                **ann_options) -> BuildReport:
    """Embed every item of ``source`` with ``model`` into the index at ``index_dir``
    (``captions=False``: without generated captions and caption fusion; ``embeddings``: from
    the vectors ``unifashion embed`` wrote for it, without running the model).

    ``source``: item records, an embedded catalogue folder (with ``split``), an image folder with
    ``metadata.jsonl`` / ``metadata.csv``, or such a file. See :class:`CatalogueBuilder`.
    """
    builder = CatalogueBuilder(model, batch_size=batch_size, progress=progress, captions=captions)
    return builder.build(source, index_dir, split=split, ann=ann, resume=resume, backend=backend,
                         embeddings=embeddings, break_lock=break_lock, **ann_options)
