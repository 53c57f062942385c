"""Frozen vision features of a whole dataset, on disk: sharded, read row by row, built once.

The vision encoder is frozen in every training phase and in evaluation, so the features of an
image never change. At the real datasets' size they do not fit in RAM (FashionGen's 260k training
images at ViT-g's 257 x 1408 are about 190 GB in float16), so a :class:`FeatureCache` keeps them
in ``.npy`` shards of ``shard_size`` rows each. Only the rows a batch asks for are read, with
positioned reads (``pread``) into the batch's own buffer, runs of consecutive rows in one call.
The shards are never memory-mapped: a map's pages count in the process's resident memory, and the
kernel maps the neighbours of every page faulted in (fault-around), so random row access over a
map left a growing share of the cache resident (+127 MB at 25,000 images of 32 x 256, measured in
``benchmarks/results/training_memory.md``'s run) even with each read row released. Read this way,
the pages stay in the kernel's page cache (shared, reclaimable) and the process's resident memory
does not grow with the dataset.

Layout of a cache folder::

    meta.json                 ids (row order), row shape, dtype, shard size, the key it was built for
    shard-00000.npy ...       (rows, *shape) float16, one file per shard_size rows

:func:`build_feature_cache` writes it, streaming: images are read by ``DataLoader`` workers, a
batch is encoded, written into the current shard, and forgotten. A shard becomes visible only
when complete (written to ``.tmp``, then renamed), so a stopped build continues at the first
missing shard. A folder built for another ``key`` (another encoder, other images) is an error
naming both keys, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unifashion.atomic import atomic_write, atomic_writer

META_FILE = "meta.json"
FORMAT_VERSION = 1
#: Default shard size in bytes: a shard is the unit a stopped build redoes.
SHARD_BYTES = 256 * 2**20


def records_key(records: Sequence[Any], encoder_key: str) -> str:
    """A short hash of what a cache's rows depend on: each record's id and where its image comes
    from (path, or h5 file and row), and the encoder. Image *contents* are not hashed (that would
    read the dataset): rewrite an image in place and you must delete the cache."""
    digest = hashlib.sha256(encoder_key.encode())
    for record in records:
        digest.update(str(record.item_id).encode())
        digest.update(b"\0")
        digest.update(image_origin(record).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def image_origin(record: Any) -> str:
    """Where a record's image comes from, as text (a path, an h5 file and row, or "memory")."""
    rows = getattr(record, "rows", None)
    if rows is not None and hasattr(record, "row"):
        return f"{rows.path}#{record.row}"
    image = record.__dict__.get("image", None)
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return "bytes:" + hashlib.sha256(image).hexdigest()[:16]
    if isinstance(image, np.ndarray):
        return "array:" + hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]
    return "memory"


def encoder_key(model) -> str:
    """What a model's frozen vision features depend on: the encoder's class and config, the
    processor's image size and normalisation, and a hash of the encoder's weights (so two
    encoders never share a cache). Any model with ``vision`` and ``processor`` (UniFashion, the
    dual encoder) has one."""
    parts: dict[str, Any] = {"class": type(model.vision).__name__}
    config = getattr(getattr(model, "config", None), "vision", None)
    if config is not None:
        from unifashion import configuration

        parts["config"] = configuration.to_dict(config)
    processor = model.processor
    parts["processor"] = [getattr(processor, "image_size", None), str(getattr(processor, "resize_mode", None)),
                          np.asarray(getattr(processor, "image_mean", 0.0)).tolist(),
                          np.asarray(getattr(processor, "image_std", 1.0)).tolist()]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.vision.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()


class _Shard:
    """One ``.npy`` shard, opened for positioned reads on first use (per process: DataLoader
    workers open their own after fork)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: Any = None
        self._pid: int | None = None
        self.offset = 0
        self.rows = 0
        self.dtype = np.dtype(np.float16)
        self.row_shape: tuple[int, ...] = ()
        self.row_bytes = 0

    def open(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            return
        handle = self.path.open("rb", buffering=0)
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
        except ValueError as exc:
            handle.close()
            raise ValueError(f"{self.path}: not a cache shard ({exc})") from exc
        if fortran:
            handle.close()
            raise ValueError(f"{self.path}: a Fortran-ordered shard is not a cache shard")
        self._file, self._pid, self.offset = handle, os.getpid(), offset
        self.rows, self.dtype, self.row_shape = int(shape[0]), np.dtype(dtype), tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        expected = offset + self.rows * self.row_bytes
        size = os.fstat(handle.fileno()).st_size
        if size < expected:
            raise ValueError(f"{self.path}: truncated shard ({size} bytes, its header needs {expected})")

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The ``rows`` (sorted, distinct row numbers within this shard) as (len(rows), *shape) in
        the shard's dtype, one read per run of consecutive rows."""
        self.open()
        if len(rows) and rows[-1] >= self.rows:
            raise ValueError(f"{self.path}: row {int(rows[-1])} asked for, the shard holds {self.rows}")
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for first, last in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]]), strict=True):
            self._read_into(flat[first:last].reshape(-1), self.offset + int(rows[first]) * self.row_bytes)
        return out

    def _read_into(self, buffer: np.ndarray, position: int) -> None:
        view, done = memoryview(buffer), 0
        while done < len(view):
            if hasattr(os, "preadv"):
                got = os.preadv(self._file.fileno(), [view[done:]], position + done)
            else:  # no positioned reads (Windows): seek, then read
                self._file.seek(position + done)
                got = self._file.readinto(view[done:])
            if not got:
                raise ValueError(f"{self.path}: unexpected end of file at byte {position + done}")
            done += got

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


class FeatureCache:
    """Read side of a cache folder: ``rows(indices)`` / ``features(ids)`` as float32 tensors.

    Picklable without its maps (DataLoader workers open their own), and indexable like the
    (N, *shape) tensor it stands for: ``cache[a:b]``, ``cache.shape``, ``len(cache)``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_file = self.folder / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"not a feature cache: {meta_file} is missing")
        meta = json.loads(meta_file.read_text())
        self.meta = meta
        self.ids: list[str] = meta["ids"]
        self.index = {item_id: i for i, item_id in enumerate(self.ids)}
        self.row_shape = tuple(meta["row_shape"])
        self.shard_size = int(meta["shard_size"])
        self.key = meta["key"]
        n_shards = -(-len(self.ids) // self.shard_size)
        self._shards = [_Shard(self.folder / shard_name(s)) for s in range(n_shards)]
        missing = [s.path.name for s in self._shards if not s.path.is_file()]
        if missing:
            raise FileNotFoundError(f"feature cache {self.folder} is incomplete: {missing[:3]} missing")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.ids), *self.row_shape)

    def rows(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The rows at ``indices`` (in that order) as a float32 tensor; nothing stays resident."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), *self.row_shape), dtype=np.float32)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.ids)):
            raise IndexError(f"row index out of range for a cache of {len(self.ids)} rows")
        shard_of, within = np.divmod(indices, self.shard_size)
        for s in np.unique(shard_of):
            picks = np.flatnonzero(shard_of == s)
            wanted, inverse = np.unique(within[picks], return_inverse=True)
            shard = self._shards[int(s)]
            read = shard.read(wanted)
            if read.shape[1:] != self.row_shape:
                raise ValueError(f"{shard.path}: rows of shape {read.shape[1:]}, the cache's meta says "
                                 f"{self.row_shape}")
            out[picks] = read[inverse]
        return torch.from_numpy(out)

    def features(self, ids: Sequence[str]) -> torch.Tensor:
        return self.rows([self.index[i] for i in ids])

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            return self.rows(np.arange(len(self.ids))[key])
        if isinstance(key, (int, np.integer)):
            return self.rows([int(key)])[0]
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return self.rows(key)

    def on(self, device: torch.device | str) -> DeviceRows:
        """This cache read onto ``device``."""
        return DeviceRows(self, device)


class DeviceRows:
    """A :class:`FeatureCache` whose rows arrive on a device: ``rows[...]``, ``len``, ``shape``."""

    def __init__(self, cache: FeatureCache, device: torch.device | str):
        self.cache, self.device = cache, torch.device(device)

    def __len__(self) -> int:
        return len(self.cache)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.cache.shape

    def __getitem__(self, key) -> torch.Tensor:
        return self.cache[key].to(self.device)

    def rows(self, indices) -> torch.Tensor:
        return self.cache.rows(indices).to(self.device)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


def _load_image(record: Any) -> Any:
    return record.load_image()


class _ImageRows(torch.utils.data.Dataset):
    """Reads records' inputs (in DataLoader workers; by default their PIL images), with their row number."""

    def __init__(self, records: Sequence[Any], rows: Sequence[int], read: Callable[[Any], Any]):
        self.records, self.rows, self.read = records, list(rows), read

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.rows[i], self.read(self.records[self.rows[i]])


def _collate_images(batch):
    return [row for row, _ in batch], [image for _, image in batch]


def build_feature_cache(records: Sequence[Any], encode: Callable[[list], torch.Tensor], folder: str | Path,
                        key: str, shard_size: int | None = None, batch_size: int = 64, workers: int = 0,
                        progress: bool = True, description: str = "encoding images (frozen vision encoder)",
                        read: Callable[[Any], Any] = _load_image) -> FeatureCache:
    """Encode every record's image with ``encode(list of PIL images) -> (B, *shape)`` into the
    cache folder ``folder`` (see the module docstring); return its reader.

    ``read(record)`` gives what ``encode`` takes a list of (default: the record's PIL image).
    ``shard_size`` rows per shard (default: about :data:`SHARD_BYTES` of float16 each). A
    complete cache with the same ``key`` is reused as it is; one with another key raises
    ``ValueError`` naming both (delete the folder, or give another one).
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    ids = [str(r.item_id) for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate item ids: a feature cache needs one row per id")
    if not ids:
        raise ValueError("no images to encode")
    meta_file = folder / META_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("key") != key or meta.get("ids") != ids:
            raise ValueError(f"the feature cache {folder} was built for other images or another encoder "
                             f"(key {meta.get('key')}, this run needs {key}); delete it or use another folder")
    else:
        with torch.no_grad():
            row_shape = tuple(encode([read(records[0])]).shape[1:])
        row_bytes = int(np.prod(row_shape)) * 2
        meta = {"version": FORMAT_VERSION, "key": key, "ids": ids, "row_shape": list(row_shape),
                "dtype": "float16", "shard_size": shard_size or max(1, SHARD_BYTES // row_bytes)}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(meta_file, json.dumps(meta))
    row_shape, shard_size = tuple(meta["row_shape"]), int(meta["shard_size"])
    n_shards = -(-len(ids) // shard_size)
    todo = [s for s in range(n_shards) if not (folder / shard_name(s)).is_file()]
    bar = tqdm(total=sum(min(shard_size, len(ids) - s * shard_size) for s in todo), desc=description,
               unit="img", disable=not progress)
    for s in todo:
        rows = range(s * shard_size, min(len(ids), (s + 1) * shard_size))
        loader = torch.utils.data.DataLoader(_ImageRows(records, rows, read), batch_size=batch_size,
                                             num_workers=workers, collate_fn=_collate_images)
        # Written sequentially (not through a writable map), so the build's memory is one batch.
        with atomic_writer(folder / shard_name(s)) as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                          "fortran_order": False,
                                                          "shape": (len(rows), *row_shape)})
            for _, images in loader:
                with torch.no_grad():
                    feats = encode(images).detach().to("cpu", torch.float16).numpy()
                if tuple(feats.shape[1:]) != row_shape:
                    raise ValueError(f"encoder output {feats.shape[1:]} does not match the cache's rows {row_shape}")
                handle.write(np.ascontiguousarray(feats).tobytes())
                bar.update(len(feats))
    bar.close()
    return FeatureCache(folder)
