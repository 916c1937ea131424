"""Built-in `sql`: one read-only SELECT over the SQLite database the config names.

Three locks, each enough on its own for writes: the file is opened with `mode=ro` (the OS-level
read-only open), `PRAGMA query_only` is set, and an sqlite3 authorizer allows only reading
(SELECT, READ, and the handful of functions a SELECT uses) — ATTACH, PRAGMA, writes and schema
changes are denied before they run. A progress handler interrupts a query past its time limit and
at most `max_rows` rows come back.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

DESCRIPTION = "Run one read-only SQL SELECT query on the {name} database (SQLite). Tables: {tables}."
PARAMETERS = {"type": "object", "properties": {"query": {"type": "string", "maxLength": 4000,
                                                         "description": "One SELECT statement."}},
              "required": ["query"], "additionalProperties": False}

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)  # WITH RECURSIVE: still read-only
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


class SqlError(ValueError):
    pass


def _authorizer(action: int, arg1, arg2, _db, _trigger) -> int:
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    if action in _ALLOWED or action == _RECURSIVE:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class ReadOnlyDatabase:
    def __init__(self, path: str | Path, max_rows: int = 100, time_limit_ms: int = 1000):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"the SQLite database {self.path} does not exist")
        self.max_rows, self.time_limit_ms = max_rows, time_limit_ms

    def _connect(self) -> sqlite3.Connection:
        # mode=ro: SQLite opens the file read-only; immutable is NOT set, so another writer stays visible
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_authorizer)
        return conn

    def tables(self) -> list[str]:
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        finally:
            conn.close()

    def query(self, sql: str) -> dict:
        if not sql.strip():
            raise SqlError("the query is empty")
        conn = self._connect()
        deadline = time.monotonic() + self.time_limit_ms / 1000
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
        try:
            cursor = conn.execute(sql)  # execute() runs one statement only: "a; b" is refused by sqlite3
            rows = cursor.fetchmany(self.max_rows + 1)
            columns = [d[0] for d in cursor.description or []]
        except sqlite3.OperationalError as err:
            if "interrupted" in str(err):
                raise SqlError(f"the query ran longer than {self.time_limit_ms} ms and was stopped") from None
            raise SqlError(f"query refused or failed: {err}") from None
        except (sqlite3.DatabaseError, sqlite3.ProgrammingError, sqlite3.Warning) as err:
            raise SqlError(f"query refused or failed: {err}") from None
        finally:
            conn.close()
        truncated = len(rows) > self.max_rows
        return {"columns": columns, "rows": [list(r) for r in rows[:self.max_rows]], "truncated": truncated}
