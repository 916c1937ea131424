"""The human-review queue (SQLite): flagged answers wait here; reviewers approve, edit or reject.

Every decision goes through the request path's auditor as one AuditRecord, whoever makes it
(the reviewer API or the console calling `decide` directly)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from domaintune.serve.hooks import AuditRecord, Principal

DECISIONS = {"approve": "approved", "edit": "edited", "reject": "rejected"}
STATUSES = ("pending", "approved", "edited", "rejected")
_SCHEMA = """CREATE TABLE IF NOT EXISTS review (
  id TEXT PRIMARY KEY, created REAL NOT NULL, request_id TEXT NOT NULL, owner TEXT NOT NULL, rules TEXT NOT NULL,
  mode TEXT NOT NULL, status TEXT NOT NULL, prompt TEXT NOT NULL, answer TEXT NOT NULL, final TEXT,
  decided_by TEXT, decided_at REAL, note TEXT)"""
_COLUMNS = ("item_id", "created_at", "request_id", "owner", "rules", "mode", "status", "prompt", "answer",
            "final", "decided_by", "decided_at", "note")


class ReviewError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ReviewQueue:
    def __init__(self, db: str | Path, auditor=None):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        self.auditor = auditor
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def add(self, request_id: str, owner: str, rules: list[str], mode: str, prompt: str, answer: str) -> str:
        item_id = "rev-" + secrets.token_hex(8)
        with self._lock:
            self._db.execute("INSERT INTO review VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (item_id, time.time(), request_id, owner, json.dumps(rules), mode, "pending",
                              prompt, answer, None, None, None, None))
        return item_id

    @staticmethod
    def _row(row) -> dict:
        item = dict(zip(_COLUMNS, row, strict=True))
        item["rules"] = json.loads(item["rules"])
        return item

    def get(self, item_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM review WHERE id = ?", (item_id,)).fetchone()
        return self._row(row) if row else None

    def list(self, status: str = "pending", limit: int = 100) -> list[dict]:
        if status not in STATUSES and status != "all":
            raise ReviewError(400, f"unknown status '{status}'; use one of {', '.join(STATUSES)} or all")
        query, args = "SELECT * FROM review", ()
        if status != "all":
            query, args = query + " WHERE status = ?", (status,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created LIMIT ?", (*args, limit)).fetchall()
        return [self._row(r) for r in rows]

    def decide(self, item_id: str, decision: str, principal: Principal, *, text: str | None = None,
               note: str | None = None) -> dict:
        """approve | edit (text required) | reject a pending item; audited; returns the updated item."""
        if decision not in DECISIONS:
            raise ReviewError(400, f"unknown decision '{decision}'; use approve, edit or reject")
        if decision == "edit" and not text:
            raise ReviewError(400, "an edit needs the corrected answer in 'text'")
        with self._lock:
            item = self.get(item_id)
            if item is None:
                raise ReviewError(404, f"no review item '{item_id}'")
            if item["status"] != "pending":
                raise ReviewError(409, f"item '{item_id}' was already decided ({item['status']})")
            final = {"approve": item["answer"], "edit": text, "reject": None}[decision]
            self._db.execute("UPDATE review SET status=?, final=?, decided_by=?, decided_at=?, note=? WHERE id=?",
                             (DECISIONS[decision], final, principal.key_id or principal.id, time.time(), note,
                              item_id))
        self._audit(item, decision, principal)
        return self.get(item_id)

    def _audit(self, item: dict, decision: str, principal: Principal) -> None:
        if self.auditor is None:
            return
        self.auditor.record(AuditRecord(
            request_id=uuid.uuid4().hex[:24], route=f"/v1/review/items/{{item_id}}/{decision}",
            principal=principal.id, tenant=principal.tenant, status=200, key_id=principal.key_id,
            user=principal.user, detail={"review_item": item["item_id"], "decision": decision,
                                         "reviewed_request": item["request_id"]}))

    def close(self) -> None:
        self._db.close()
