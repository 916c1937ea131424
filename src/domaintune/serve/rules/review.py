"""The human-review queue (SQLite): flagged answers wait here; reviewers approve, edit or reject.

The prompt, the answer and the reviewer's final text are sealed with AES-GCM under the data key of
the request's user (store/crypto.Vault, the keys of sessions, cache and audit), bound to the item
and field by AAD: the file holds no user text, and erasing the user (`users erase`) deletes their
items and destroys the key, so any copy left elsewhere (a backup, a freed page) stays unreadable.
Every decision goes through the request path's auditor as one AuditRecord, whoever makes it
(the reviewer API or the console calling `decide` directly)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from pathlib import Path

from domaintune.errors import ConfigError
from domaintune.serve.hooks import AuditRecord, Principal
from domaintune.serve.store.crypto import KeyUnavailable, Vault
from domaintune.serve.store.db import connect, query, transaction

DECISIONS = {"approve": "approved", "edit": "edited", "reject": "rejected"}
STATUSES = ("pending", "approved", "edited", "rejected")
SEALED = ("prompt", "answer", "final")
_SCHEMA = """CREATE TABLE IF NOT EXISTS review (
  id TEXT PRIMARY KEY, created REAL NOT NULL, request_id TEXT NOT NULL, owner TEXT NOT NULL, subject TEXT NOT NULL,
  rules TEXT NOT NULL, mode TEXT NOT NULL, status TEXT NOT NULL, prompt BLOB NOT NULL, answer BLOB NOT NULL,
  final BLOB, decided_by TEXT, decided_at REAL, note TEXT)"""
_COLUMNS = ("item_id", "created_at", "request_id", "owner", "subject", "rules", "mode", "status", "prompt",
            "answer", "final", "decided_by", "decided_at", "note")
_SELECT = "SELECT " + ", ".join(["id", "created", *_COLUMNS[2:]]) + " FROM review"


class ReviewError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ReviewQueue:
    def __init__(self, db: str | Path, vault: Vault, auditor=None):
        self.auditor, self.vault = auditor, vault
        self._db = connect(db, secure_delete=True)  # erased items must not linger in free pages
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(review)")}
        if "subject" not in columns:
            raise ConfigError([f"serve.rules.review_db: {db} was written by an older domaintune that stored review "
                               "text unencrypted; decide its pending items, then move the file away (a new "
                               "encrypted queue is created)"])

    def _seal(self, subject: str, item_id: str, field: str, text: str | None) -> bytes | None:
        if text is None:
            return None
        return self.vault.seal(subject, text.encode(), f"review|{item_id}|{field}".encode())

    def _open(self, subject: str, item_id: str, field: str, blob: bytes | None) -> str | None:
        if blob is None:
            return None
        try:
            return self.vault.open(subject, bytes(blob), f"review|{item_id}|{field}".encode()).decode()
        except KeyUnavailable:
            return None  # the user was erased: the text is gone for good

    def add(self, request_id: str, owner: str, rules: list[str], mode: str, prompt: str, answer: str,
            subject: str | None = None) -> str:
        """`owner`: the key that may read the outcome; `subject`: whose data key seals the text (the erasure
        subject, principal.user; default the owner)."""
        item_id, subject = "rev-" + secrets.token_hex(8), subject or owner
        with transaction(self._db):
            self._db.execute("INSERT INTO review VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (item_id, time.time(), request_id, owner, subject, json.dumps(rules), mode, "pending",
                              self._seal(subject, item_id, "prompt", prompt),
                              self._seal(subject, item_id, "answer", answer), None, None, None, None))
        return item_id

    def _row(self, row) -> dict:
        item = dict(zip(_COLUMNS, row, strict=True))
        item["rules"] = json.loads(item["rules"])
        for name in SEALED:
            item[name] = self._open(item["subject"], item["item_id"], name, item[name])
        return item

    def get(self, item_id: str) -> dict | None:
        rows = query(self._db, _SELECT + " WHERE id = ?", (item_id,))
        return self._row(rows[0]) if rows else None

    def list(self, status: str = "pending", limit: int = 100) -> list[dict]:
        if status not in STATUSES and status != "all":
            raise ReviewError(400, f"unknown status '{status}'; use one of {', '.join(STATUSES)} or all")
        sql, args = _SELECT, ()
        if status != "all":
            sql, args = sql + " WHERE status = ?", (status,)
        return [self._row(r) for r in query(self._db, sql + " ORDER BY created LIMIT ?", (*args, limit))]

    def erase(self, subject: str) -> int:
        """Delete every item of `subject` (GDPR erasure, with the destruction of their data key)."""
        with transaction(self._db):
            return self._db.execute("DELETE FROM review WHERE subject = ?", (subject,)).rowcount

    def decide(self, item_id: str, decision: str, principal: Principal, *, text: str | None = None,
               note: str | None = None) -> dict:
        """approve | edit (text required) | reject a pending item; audited; returns the updated item."""
        if decision not in DECISIONS:
            raise ReviewError(400, f"unknown decision '{decision}'; use approve, edit or reject")
        if decision == "edit" and not text:
            raise ReviewError(400, "an edit needs the corrected answer in 'text'")
        with transaction(self._db):  # read and update as one step: two reviewers cannot both decide an item
            item = self.get(item_id)
            if item is None:
                raise ReviewError(404, f"no review item '{item_id}'")
            if item["status"] != "pending":
                raise ReviewError(409, f"item '{item_id}' was already decided ({item['status']})")
            final = {"approve": item["answer"], "edit": text, "reject": None}[decision]
            self._db.execute("UPDATE review SET status=?, final=?, decided_by=?, decided_at=?, note=? WHERE id=?",
                             (DECISIONS[decision], self._seal(item["subject"], item_id, "final", final),
                              principal.key_id or principal.id, time.time(), note, item_id))
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
