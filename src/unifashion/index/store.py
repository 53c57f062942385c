"""The transactional half of a catalogue index: item metadata, configuration and the manifest.

Everything that must change atomically lives in one SQLite database (``catalogue.sqlite``):

- ``items``: one row per live item: its metadata and where its vectors lie (segment id, row);
- ``manifest``: one row naming the committed generation, the vector segments and the FAISS files
  that belong to it (a base file and the deltas appended since, see generations.py);
- ``ann_removed``: the keys of items deleted since the base FAISS file was written, whose vectors
  that file (or a delta) still holds; a loaded index removes them in memory;
- ``config``: the index's fixed shape (dim, queries per item) and its ANN settings.

A commit of the index writes its new vector and FAISS files first and then calls
:meth:`MetadataStore.apply`, which changes ``items``, ``manifest`` (and ``config``) in *one*
SQLite transaction. That transaction is the switch: a reader sees either the old metadata with
the old manifest or the new metadata with the new manifest, never a mix, so metadata and vectors
always agree. SQLite runs in WAL mode with ``synchronous=FULL``: readers in other processes do not
block the writer, and a committed transaction survives a crash of the process or the machine.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: Bumped whenever the on-disk layout changes incompatibly; an index of another version is refused.
FORMAT_VERSION = 2

DATABASE_NAME = "catalogue.sqlite"

# SQLite's limit on host parameters per statement is 32766 in recent versions, 999 in old ones.
_SQL_BATCH = 900

_SCHEMA = """
CREATE TABLE config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE manifest (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    generation INTEGER NOT NULL,
    segments TEXT NOT NULL,      -- JSON list of [segment id, rows in its files]
    ann_file TEXT NOT NULL,      -- FAISS file name under ann/, '' while the index is empty
    ann_kind TEXT NOT NULL,      -- the stage actually built: 'vectors-flat' until the IVF is trained
    next_key INTEGER NOT NULL,   -- item keys (FAISS ids) are never reused
    next_segment INTEGER NOT NULL,
    ann_deltas TEXT NOT NULL DEFAULT '[]' -- JSON list of FAISS delta file names under ann/, oldest first
);
CREATE TABLE ann_removed (
    key INTEGER PRIMARY KEY      -- deleted since the base FAISS file was written
);
CREATE TABLE items (
    key INTEGER PRIMARY KEY,     -- the FAISS id of the item's vectors (never reused)
    item_id TEXT NOT NULL UNIQUE,
    segment INTEGER NOT NULL,
    row INTEGER NOT NULL,
    category TEXT NOT NULL,
    captions TEXT NOT NULL,      -- JSON object {style: caption}
    attributes TEXT NOT NULL,    -- JSON object
    image_path TEXT NOT NULL,
    fusion_caption TEXT NOT NULL -- the generated caption whose embedding is the fusion vector
);
CREATE INDEX items_by_category ON items (category);
"""


@dataclass(frozen=True)
class ItemMetadata:
    """What the index stores about an item besides its vectors."""

    item_id: str
    category: str = ""
    captions: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    image_path: str = ""
    #: The model's own caption of the item, whose text embedding is the item's fusion vector.
    fusion_caption: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "category": self.category,
            "captions": dict(self.captions),
            "attributes": dict(self.attributes),
            "image_path": self.image_path,
            "fusion_caption": self.fusion_caption,
        }


@dataclass(frozen=True)
class Manifest:
    """The committed generation: which files hold the vectors and the ANN index."""

    generation: int
    segments: tuple[tuple[int, int], ...]  # (segment id, rows)
    ann_file: str
    ann_kind: str
    next_key: int
    next_segment: int
    #: FAISS files of the items added since ``ann_file`` was written, oldest first.
    ann_deltas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """Where every live item's vectors lie, as arrays sorted by key."""

    keys: np.ndarray  # int64
    segments: np.ndarray  # int64 segment id
    rows: np.ndarray  # int64 row within the segment
    categories: np.ndarray  # object array of category strings


class ItemRow(NamedTuple):
    """One row of the ``items`` table, its fields named (and ordered) as the table's columns."""

    key: int  # the FAISS id of the item's vectors; never reused
    item_id: str
    segment: int  # the segment whose files hold the item's vectors
    row: int  # the row within that segment
    category: str
    captions: str  # JSON object {style: caption}
    attributes: str  # JSON object
    image_path: str
    fusion_caption: str  # the generated caption whose embedding is the fusion vector

    @classmethod
    def insert_statement(cls) -> str:
        """``INSERT INTO items`` naming every column, with a named parameter per field."""
        return f"INSERT INTO items ({', '.join(cls._fields)}) VALUES ({', '.join(':' + f for f in cls._fields)})"


def metadata_from_row(
    item_id: str, category: str, captions: str, attributes: str, image_path: str, fusion_caption: str
) -> ItemMetadata:
    return ItemMetadata(item_id, category, json.loads(captions), json.loads(attributes), image_path, fusion_caption)


class MetadataStore:
    """The SQLite database of one index folder. Not thread-safe: the index serialises calls."""

    def __init__(self, folder: Path, read_only: bool = False):
        path = Path(folder) / DATABASE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no catalogue index at {folder} (missing {DATABASE_NAME})")
        self.read_only = read_only
        uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so that every transaction is explicit.
        self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        if not read_only:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
        version = self.config().get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"index at {folder} has format version {version}; this code reads {FORMAT_VERSION}")

    @staticmethod
    def create(folder: Path, config: dict[str, Any], empty_ann_kind: str) -> None:
        """Create the database with an empty generation-0 manifest, whose ANN stage is
        ``empty_ann_kind`` (what an empty index has built)."""
        conn = sqlite3.connect(Path(folder) / DATABASE_NAME, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            full_config = {"format_version": FORMAT_VERSION, **config}
            conn.executemany(
                "INSERT INTO config (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in full_config.items()],
            )
            conn.execute("INSERT INTO manifest VALUES (0, 0, '[]', '', ?, 0, 0, '[]')", (empty_ann_kind,))
            conn.execute("COMMIT")
        finally:
            conn.close()

    def close(self) -> None:
        self.conn.close()

    def set_config(self, key: str, value: Any) -> None:
        """Set one configuration value (outside a generation switch: it changes no item); one
        autocommitted statement, so atomic."""
        self.conn.execute("INSERT OR REPLACE INTO config (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- reads -------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self.conn.execute("SELECT key, value FROM config")}

    def generation(self) -> int:
        return int(self.conn.execute("SELECT generation FROM manifest").fetchone()[0])

    def _manifest(self) -> Manifest:
        generation, segments, ann_file, ann_kind, next_key, next_segment, ann_deltas = self.conn.execute(
            "SELECT generation, segments, ann_file, ann_kind, next_key, next_segment, ann_deltas FROM manifest"
        ).fetchone()
        return Manifest(
            generation=generation,
            segments=tuple((int(s), int(r)) for s, r in json.loads(segments)),
            ann_file=ann_file,
            ann_kind=ann_kind,
            next_key=next_key,
            next_segment=next_segment,
            ann_deltas=tuple(json.loads(ann_deltas)),
        )

    def read_committed(self) -> tuple[Manifest, Layout, np.ndarray]:
        """The manifest, the item layout and the keys in ``ann_removed`` (sorted int64), read in
        one transaction so that they agree."""
        self.conn.execute("BEGIN")
        try:
            manifest = self._manifest()
            records = self.conn.execute("SELECT key, segment, row, category FROM items ORDER BY key").fetchall()
            removed = [r[0] for r in self.conn.execute("SELECT key FROM ann_removed ORDER BY key")]
        finally:
            self.conn.execute("COMMIT")
        count = len(records)
        layout = Layout(
            keys=np.fromiter((r[0] for r in records), dtype=np.int64, count=count),
            segments=np.fromiter((r[1] for r in records), dtype=np.int64, count=count),
            rows=np.fromiter((r[2] for r in records), dtype=np.int64, count=count),
            categories=np.array([r[3] for r in records], dtype=object),
        )
        return manifest, layout, np.array(removed, dtype=np.int64)

    def keys_of(self, item_ids: Sequence[str]) -> dict[str, int]:
        """The keys of those of ``item_ids`` that are committed."""
        found: dict[str, int] = {}
        for start in range(0, len(item_ids), _SQL_BATCH):
            batch = list(item_ids[start : start + _SQL_BATCH])
            marks = ",".join("?" * len(batch))
            for item_id, key in self.conn.execute(f"SELECT item_id, key FROM items WHERE item_id IN ({marks})", batch):
                found[item_id] = key
        return found

    def location_of(self, item_id: str) -> tuple[int, int, int] | None:
        """(key, segment, row) of a committed item, or None."""
        row = self.conn.execute("SELECT key, segment, row FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def get(self, item_id: str) -> ItemMetadata | None:
        row = self.conn.execute(
            "SELECT item_id, category, captions, attributes, image_path, fusion_caption FROM items WHERE item_id = ?",
            (item_id,),
        ).fetchone()
        return None if row is None else metadata_from_row(*row)

    def metadata_by_key(self, keys: Iterable[int], generation: int) -> dict[int, ItemMetadata] | None:
        """Metadata of ``keys``, or None if the committed generation is no longer ``generation``.

        The generation check and the reads share a transaction, so a caller holding vectors of
        ``generation`` never receives metadata of another one.
        """
        keys = [int(k) for k in keys]
        self.conn.execute("BEGIN")
        try:
            if self.generation() != generation:
                return None
            found: dict[int, ItemMetadata] = {}
            for start in range(0, len(keys), _SQL_BATCH):
                batch = keys[start : start + _SQL_BATCH]
                marks = ",".join("?" * len(batch))
                query = (
                    "SELECT key, item_id, category, captions, attributes, image_path, fusion_caption "
                    f"FROM items WHERE key IN ({marks})"
                )
                for key, *fields in self.conn.execute(query, batch):
                    found[key] = metadata_from_row(*fields)
            return found
        finally:
            self.conn.execute("COMMIT")

    def item_ids(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT item_id FROM items ORDER BY key")]

    def all_metadata(self) -> list[ItemMetadata]:
        """Every item's metadata in insertion order, read in one query (one transaction)."""
        rows = self.conn.execute(
            "SELECT item_id, category, captions, attributes, image_path, fusion_caption FROM items ORDER BY key")
        return [metadata_from_row(*row) for row in rows]

    # -- the one write -----------------------------------------------------------------------

    def apply(
        self,
        manifest: Manifest,
        deleted_keys: Sequence[int] = (),
        new_rows: Sequence[ItemRow] = (),
        moved_rows: Sequence[tuple[int, int, int]] = (),
        config_updates: dict[str, Any] | None = None,
        ann_removed: Sequence[int] | None = (),
    ) -> None:
        """Commit one generation: delete, insert and move items, switch the manifest, atomically.

        ``moved_rows`` are (segment, row, key) for items whose vectors were rewritten (compaction).
        ``ann_removed``: keys to add to the ``ann_removed`` table (the manifest's FAISS files still
        hold their vectors), or None to empty it (the manifest names a new base file without them).
        If anything fails, the transaction rolls back and the previous generation stays current.
        """
        conn = self.conn
        # IMMEDIATE takes the write lock up front, so the transaction cannot fail half-way on a
        # lock held by another connection.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self.generation()
            if manifest.generation != current + 1:
                raise RuntimeError(
                    f"index changed under this writer: committing generation {manifest.generation} on top of {current}"
                )
            conn.executemany("DELETE FROM items WHERE key = ?", [(int(k),) for k in deleted_keys])
            conn.executemany(ItemRow.insert_statement(), [item_row._asdict() for item_row in new_rows])
            conn.executemany("UPDATE items SET segment = ?, row = ? WHERE key = ?", moved_rows)
            conn.execute(
                "UPDATE manifest SET generation = ?, segments = ?, ann_file = ?, ann_kind = ?, next_key = ?, "
                "next_segment = ?, ann_deltas = ?",
                (
                    manifest.generation,
                    json.dumps([list(s) for s in manifest.segments]),
                    manifest.ann_file,
                    manifest.ann_kind,
                    manifest.next_key,
                    manifest.next_segment,
                    json.dumps(list(manifest.ann_deltas)),
                ),
            )
            if ann_removed is None:
                conn.execute("DELETE FROM ann_removed")
            else:
                conn.executemany("INSERT OR IGNORE INTO ann_removed (key) VALUES (?)", [(int(k),) for k in ann_removed])
            for key, value in (config_updates or {}).items():
                conn.execute("INSERT OR REPLACE INTO config (key, value) VALUES (?, ?)", (key, json.dumps(value)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
