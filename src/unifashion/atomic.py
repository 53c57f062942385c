"""Atomic file writes: a reader (or the next run after a crash) sees the previous file or the new
one whole, never half of one.

The content goes to a temporary file beside the target (same folder, so the same file system),
is flushed and fsynced, then ``os.replace`` puts it in place in one step and the folder is fsynced
so that the rename itself survives a power cut. If the writing fails, the temporary file is
removed and the target keeps its previous content.

Three forms, one mechanism:

* :func:`atomic_write` (``path``, bytes or str) for content already in memory;
* :func:`atomic_writer` (a context manager yielding a file object) for writers that take one
  (``np.savez``, ``json.dump``, a stream of chunks);
* :func:`atomic_path` (a context manager yielding the temporary path) for writers that take a
  file name (safetensors' ``save_file``).

The temporary name is unique per process and thread, so processes writing the same file at once
(sharded embedding, every process writing the same manifest) never write into each other's, and
the last rename wins. It is created like any other file (the umask's permissions, not
``mkstemp``'s owner-only ones).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_writer", "fsync_path"]


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_path(path: Path) -> None:
    """Flush a file (or, where the platform allows, a folder) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; when the block ends without an
    exception that file is fsynced and replaces ``path`` (else it is removed). The folder must
    exist; the writer must create the file under exactly this name."""
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """A file object (``mode`` "wb" or "w"; text defaults to UTF-8) whose content replaces
    ``path`` when the block ends without an exception."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as temporary, open(temporary, mode.replace("w", "x"), encoding=encoding) as handle:
        yield handle
        handle.flush()


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Replace ``path``'s content with ``data`` (str is written in ``encoding``); returns the path."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with atomic_writer(path, "wb") as handle:
        handle.write(data)
    return Path(path)
