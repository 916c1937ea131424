"""SQLite (stdlib, WAL) store of the experiments: one row per enrolled request, its feedback, and the
model-version promotions. Holds ids, counts and scores only — never prompt or answer text."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  request_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, variant TEXT NOT NULL, principal TEXT NOT NULL,
  status INTEGER NOT NULL, latency_ms REAL NOT NULL, prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS requests_by_experiment ON requests (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
  request_id TEXT PRIMARY KEY REFERENCES requests (request_id), score REAL NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS model_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, alias TEXT NOT NULL, action TEXT NOT NULL,
  version TEXT, previous TEXT, actor TEXT NOT NULL);
"""


class ExperimentStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection shared by the event loop and CLI callers
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")  # the CLI and the server may write at the same moment
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses at most the last commits, never corrupts
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ requests and feedback
    def add_request(self, request_id: str, experiment: str, variant: str, principal: str, status: int,
                    latency_ms: float, prompt_tokens: int, completion_tokens: int) -> None:
        self._run("INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?,?,?,?)",
                  (request_id, experiment, variant, principal, status, latency_ms, prompt_tokens,
                   completion_tokens, time.time()))

    def owner(self, request_id: str) -> str | None:
        rows = self._run("SELECT principal FROM requests WHERE request_id = ?", (request_id,))
        return rows[0][0] if rows else None

    def add_feedback(self, request_id: str, score: float) -> None:
        """The latest feedback on a request wins (a user may change their mind)."""
        self._run("INSERT OR REPLACE INTO feedback VALUES (?,?,?)", (request_id, score, time.time()))

    def rows(self, experiment: str) -> list[dict]:
        cols = ("variant", "status", "latency_ms", "prompt_tokens", "completion_tokens", "score")
        found = self._run("SELECT r.variant, r.status, r.latency_ms, r.prompt_tokens, r.completion_tokens, f.score "
                          "FROM requests r LEFT JOIN feedback f USING (request_id) WHERE r.experiment = ?",
                          (experiment,))
        return [dict(zip(cols, row)) for row in found]

    # ------------------------------------------------------------------ model versions
    def active_version(self, alias: str) -> str | None:
        rows = self._run("SELECT version FROM model_events WHERE alias = ? ORDER BY seq DESC LIMIT 1", (alias,))
        return rows[0][0] if rows else None

    def model_event(self, alias: str, action: str, version: str | None, previous: str | None, actor: str) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO model_events (ts, alias, action, version, previous, actor) "
                                   "VALUES (?,?,?,?,?,?)", (time.time(), alias, action, version, previous, actor))
            return int(cur.lastrowid)

    def model_history(self, alias: str) -> list[dict]:
        cols = ("seq", "ts", "action", "version", "previous", "actor")
        rows = self._run("SELECT seq, ts, action, version, previous, actor FROM model_events WHERE alias = ? "
                         "ORDER BY seq", (alias,))
        return [dict(zip(cols, row)) for row in rows]
