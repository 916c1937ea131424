"""The merge's on-disk index: one SQLite file per run, in the stage folder, deleted when the merge ends.

What the corpus-wide merge needs per document (position, id, small fields, the exact and near-duplicate
keys, its split) lives here instead of in Python objects: those cost ~2 KB per document and made the
merge's memory grow with the corpus. SQLite sorts and groups out of core (its page cache is capped by
`CACHE_KIB`, each sorter holds as much before it spills to a temporary file), so the merge's memory stays
flat however large the corpus; what the merge itself keeps is bounded (a few open shard files,
`neardup.KeeperShingles`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

# SQLite's page cache, and what each sorter (ORDER BY, GROUP BY, CREATE INDEX) holds before it spills: the
# index's memory is a few times this whatever the corpus size. With 16 MB SQLite itself peaked at 51 MB at
# 800 MB of corpus (8 MB with 2 MB), with heap fragmentation on top, and the merge was no faster:
# merge-only re-runs at 800 MB took 157 s with 16 MB and 139 s with 2 MB (bench/README.md, issue 18).
CACHE_KIB = 2 << 10

SCHEMA = """
CREATE TABLE docs (
    did INTEGER PRIMARY KEY,              -- load order
    s INTEGER, f INTEGER, q INTEGER,      -- reading position: source, file, record
    shard INTEGER, offset INTEGER, row INTEGER,  -- where the record and its signature are in the shard files
    id TEXT, quality REAL, chars INTEGER, sha TEXT, digest BLOB, orig TEXT,
    stream TEXT, source TEXT, path TEXT, line INTEGER, steps TEXT, stratum TEXT,
    state INTEGER DEFAULT 0,              -- KEPT, or dropped by a corpus step / as a near-duplicate
    grp TEXT, label TEXT
);
CREATE TABLE corpus_dropped (did INTEGER PRIMARY KEY, s INTEGER, f INTEGER, q INTEGER, id TEXT, step TEXT,
                             orig TEXT, reason TEXT, detail TEXT, file TEXT, line INTEGER, source TEXT,
                             excerpt TEXT);
CREATE TABLE ranks (rank INTEGER PRIMARY KEY, did INTEGER);  -- near-duplicate keeper order
CREATE TABLE bands (band INTEGER, h INTEGER, rank INTEGER);
CREATE TABLE shared (gid INTEGER PRIMARY KEY, band INTEGER, h INTEGER);  -- band keys held by 2+ documents
CREATE TABLE members (rank INTEGER, gid INTEGER);
CREATE TABLE keepers (gid INTEGER, rank INTEGER);
CREATE INDEX keepers_gid ON keepers (gid, rank);
CREATE TABLE neardup (dup_did INTEGER PRIMARY KEY, dup_id TEXT, keeper_did INTEGER, keeper_id TEXT);
CREATE INDEX neardup_dup ON neardup (dup_id);
CREATE INDEX neardup_keeper ON neardup (keeper_id, dup_id);
CREATE TABLE groups (grp TEXT PRIMARY KEY, n INTEGER, stream TEXT, stratum TEXT, ghash TEXT);
CREATE TABLE labels (grp TEXT PRIMARY KEY, label TEXT);
"""
KEPT, CORPUS_DROPPED, NEAR_DROPPED = 0, 1, 2


class MergeIndex:
    def __init__(self, path: Path):
        self.path = path
        path.unlink(missing_ok=True)  # left by a killed run: nothing in it is reused
        self.db = sqlite3.connect(path)
        # A scratch file rebuilt on every run: no journal, no fsync.
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE", "temp_store=FILE",
                       f"cache_size=-{CACHE_KIB}"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(SCHEMA)
        self._maps = 0

    def __call__(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def one(self, sql: str, params: Any = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def many(self, sql: str, rows) -> None:
        self.db.executemany(sql, rows)

    def disk_map(self) -> DiskMap:
        self._maps += 1
        return DiskMap(self.db, f"memo{self._maps}")

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


class DiskMap(MutableMapping):
    """A dict whose items live in a table of the index (keys: str or bytes; values: str)."""

    def __init__(self, db: sqlite3.Connection, table: str):
        self.db, self.table = db, table
        db.execute(f"CREATE TABLE {table} (k PRIMARY KEY, v) WITHOUT ROWID")
        self._get = f"SELECT v FROM {table} WHERE k = ?"
        self._set = f"INSERT OR REPLACE INTO {table} (k, v) VALUES (?, ?)"

    def get(self, key: Any, default: Any = None) -> Any:
        row = self.db.execute(self._get, (key,)).fetchone()
        return default if row is None else row[0]

    def __getitem__(self, key: Any) -> Any:
        row = self.db.execute(self._get, (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return row[0]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.db.execute(self._set, (key, value))

    def __delitem__(self, key: Any) -> None:
        if self.db.execute(f"DELETE FROM {self.table} WHERE k = ?", (key,)).rowcount == 0:
            raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return (k for (k,) in self.db.execute(f"SELECT k FROM {self.table}"))

    def __len__(self) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]
