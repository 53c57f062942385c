"""Embedding a large catalogue ahead of indexing: in shards, on one process or many, resumable.

:func:`embed_catalogue` splits a source's items (in the order :func:`load_item_records` gives
them) into shards of ``shard_size`` items; process ``rank`` of ``world_size`` embeds the shards
whose number is ``rank`` modulo ``world_size`` (:class:`CatalogueBuilder.embed`: Z, and unless
``captions=False`` the generated caption and its embedding), writing each as one file. So the
same command run under ``accelerate launch`` on several GPUs or nodes (a shared folder) divides
the catalogue between its processes, and a run that stopped skips the shards already written.

``unifashion index --embeddings DIR`` then stores the vectors without running the model again
(:meth:`CatalogueBuilder.build`); the folder's ``embeddings.json`` records the model, the
items and the caption setting, and building refuses a folder made by another model or from
another list of items.

A shard is ``shard-NNNNNN.npz`` (numpy arrays only, read with ``allow_pickle=False``): ``ids``,
``multi`` (items, num_queries, dim) float16, and with captions ``fusion`` (items, dim) float32 and
``captions``. It is written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unifashion.atomic import atomic_write, atomic_writer
from unifashion.data.folder import load_item_records
from unifashion.data.records import ItemRecord, load_image

MANIFEST_NAME = "embeddings.json"
_FORMAT_VERSION = 1


def shard_path(folder: Path, number: int) -> Path:
    return folder / f"shard-{number:06d}.npz"


def ids_digest(ids: Sequence[str]) -> str:
    """A sha256 of the item ids in order: what tells one list of items from another."""
    digest = hashlib.sha256()
    for item_id in ids:
        digest.update(item_id.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class EmbeddingsManifest:
    """What an embeddings folder holds: ``items`` ids (digest ``ids_sha256``) in shards of
    ``shard_size``, embedded by the model of ``model_identity``, with captions or without."""

    items: int
    shard_size: int
    ids_sha256: str
    model_identity: str | None
    captions: bool
    num_queries: int
    dim: int

    @property
    def shards(self) -> int:
        return -(-self.items // self.shard_size)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": _FORMAT_VERSION, **self.__dict__}

    @classmethod
    def read(cls, folder: Path) -> EmbeddingsManifest:
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no catalogue embeddings at {folder} (missing {MANIFEST_NAME}); make them with "
                                    f"`unifashion embed`")
        data = json.loads(path.read_text())
        if data.pop("format_version", None) != _FORMAT_VERSION:
            raise ValueError(f"{path} is not in format {_FORMAT_VERSION} of catalogue embeddings")
        return cls(**data)


@dataclass(frozen=True)
class EmbedReport:
    """The outcome of one process's :func:`embed_catalogue`."""

    folder: Path
    rank: int
    world_size: int
    embedded: int  # items this call embedded
    skipped_shards: int  # shards of this process that an earlier run had written
    shards: int  # shards of the whole catalogue
    seconds: float

    def __str__(self) -> str:
        rate = self.embedded / self.seconds if self.seconds > 0 else 0.0
        return (f"process {self.rank + 1}/{self.world_size}: embedded {self.embedded} items into {self.folder} in "
                f"{self.seconds:.1f} s ({rate:.1f} items/s); {self.skipped_shards} of its shards were already there "
                f"({self.shards} shards in all)")


def _write_manifest(folder: Path, manifest: EmbeddingsManifest) -> None:
    """Record ``manifest``, or check that the folder's agrees with it (a resumed or parallel run)."""
    path = folder / MANIFEST_NAME
    if path.is_file():
        existing = EmbeddingsManifest.read(folder)
        if existing != manifest:
            differs = [k for k, v in manifest.__dict__.items() if getattr(existing, k) != v]
            raise ValueError(f"{folder} holds embeddings of another run (its {', '.join(differs)} differ): embed into "
                             f"a new folder, or delete this one")
        return
    # Every process writes the same content: the last rename wins.
    atomic_write(path, json.dumps(manifest.to_dict(), indent=2) + "\n")


def embed_catalogue(
    builder, source: str | os.PathLike | Sequence[ItemRecord], folder: str | os.PathLike, *,
    split: str | None = None, shard_size: int = 2048, rank: int = 0, world_size: int = 1, progress: bool = True,
) -> EmbedReport:
    """Embed the shards of ``source`` that belong to process ``rank`` of ``world_size`` with
    ``builder`` (a :class:`CatalogueBuilder`) into ``folder`` (see the module docstring)."""
    for name, value in (("shard_size", shard_size), ("world_size", world_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0 .. {world_size - 1}, got {rank!r}")
    started = time.perf_counter()
    records = load_item_records(source, split)
    if not records:
        raise ValueError(f"{source} has no items to embed")
    ids = [r.item_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("the source lists an item id more than once")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    manifest = EmbeddingsManifest(items=len(records), shard_size=shard_size, ids_sha256=ids_digest(ids),
                                  model_identity=builder.model_identity, captions=builder.captions,
                                  num_queries=builder.num_queries, dim=builder.embed_dim)
    _write_manifest(out, manifest)
    mine = [n for n in range(manifest.shards) if n % world_size == rank]
    todo = [n for n in mine if not shard_path(out, n).is_file()]
    embedded = 0
    with tqdm(total=sum(len(records[n * shard_size:(n + 1) * shard_size]) for n in todo), unit="item",
              desc=f"embedding (process {rank + 1}/{world_size})", disable=not progress) as bar:
        for number in todo:
            chunk = records[number * shard_size:(number + 1) * shard_size]
            parts = []
            for start in range(0, len(chunk), builder.batch_size):
                batch = chunk[start:start + builder.batch_size]
                parts.append(builder.embed([load_image(r.image) for r in batch]))
                bar.update(len(batch))
            arrays: dict[str, np.ndarray] = {
                "ids": np.array([r.item_id for r in chunk]),
                "multi": np.concatenate([p.multi_vectors for p in parts]).astype(np.float16)}
            if builder.captions:
                arrays["fusion"] = np.concatenate([p.fusion_vectors for p in parts]).astype(np.float32)
                arrays["captions"] = np.array([c for p in parts for c in p.fusion_captions])
            with atomic_writer(shard_path(out, number)) as handle:
                np.savez(handle, **arrays)
            embedded += len(chunk)
    return EmbedReport(out, rank, world_size, embedded, len(mine) - len(todo), manifest.shards,
                       time.perf_counter() - started)


@dataclass(frozen=True)
class EmbeddedShard:
    ids: list[str]
    multi_vectors: np.ndarray  # (items, num_queries, dim) float32
    fusion_vectors: np.ndarray | None
    fusion_captions: list[str] | None


def read_embeddings(folder: str | os.PathLike,
                    ids: Sequence[str]) -> tuple[EmbeddingsManifest, Iterator[EmbeddedShard]]:
    """The manifest of the embeddings in ``folder`` and an iterator over their shards, after
    checking that they are of exactly the items ``ids`` (in that order) and that every shard is
    there (a missing one names the processes to run again)."""
    path = Path(folder)
    manifest = EmbeddingsManifest.read(path)
    if manifest.items != len(ids) or manifest.ids_sha256 != ids_digest(ids):
        raise ValueError(f"the embeddings at {path} are of another list of items ({manifest.items} items) than the "
                         f"source's ({len(ids)}): embed this source again")
    missing = [n for n in range(manifest.shards) if not shard_path(path, n).is_file()]
    if missing:
        shown = ", ".join(shard_path(path, n).name for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(f"the embeddings at {path} lack {len(missing)} of {manifest.shards} shards ({shown}): "
                                f"run `unifashion embed` again to finish them")

    def shards() -> Iterator[EmbeddedShard]:
        for number in range(manifest.shards):
            with np.load(shard_path(path, number), allow_pickle=False) as data:
                shard_ids = [str(i) for i in data["ids"]]
                if shard_ids != list(ids[number * manifest.shard_size:(number + 1) * manifest.shard_size]):
                    raise ValueError(f"{shard_path(path, number)} holds other items than its place in the manifest")
                yield EmbeddedShard(shard_ids, data["multi"].astype(np.float32),
                                    data["fusion"] if manifest.captions else None,
                                    [str(c) for c in data["captions"]] if manifest.captions else None)

    return manifest, shards()
