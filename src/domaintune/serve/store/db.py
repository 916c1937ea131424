"""SQLite for the records stores: WAL, fsync on every commit, explicit transactions, private files.

`synchronous=FULL` in WAL mode fsyncs the log at each commit, so a committed audit record survives
a SIGKILL or power loss and a half-written one is rolled back on the next open: the chain never
holds a torn record. Connections are shared by the event loop and worker threads behind a lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from domaintune.errors import ConfigError

_locks: dict[int, threading.RLock] = {}


def connect(path: str | Path, *, secure_delete: bool = False) -> sqlite3.Connection:
    """Open (creating folder and file with owner-only permissions) in WAL mode with fsync per commit."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if secure_delete:
            conn.execute("PRAGMA secure_delete=ON")
    except (OSError, sqlite3.Error) as err:
        raise ConfigError([f"{path}: cannot open the SQLite file: {err}"]) from None
    _locks[id(conn)] = threading.RLock()
    return conn


def lock(conn: sqlite3.Connection) -> threading.RLock:
    return _locks.setdefault(id(conn), threading.RLock())


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the write lock is taken up front, so a reader of
    the chain head and the append that follows cannot interleave with another process."""
    with lock(conn):
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def query(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> list[tuple]:
    with lock(conn):
        return conn.execute(sql, args).fetchall()
