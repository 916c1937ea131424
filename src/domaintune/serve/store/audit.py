"""The audit log: one append-only, HMAC-chained record per request (hooks.Auditor).

Each row holds `seq`, the record's metadata as canonical JSON (`body`), its content (prompt and
answer per policy, always sealed under the user's data key), the id of the master key the chain
key came from (`kid`, so rotation keeps old records verifiable), `prev_mac` and
`mac = HMAC-SHA256(chain_key[kid], prev_mac | seq | kid | body)`. The body carries the content's
SHA-256, so the chain covers the content too, and erasing a user (destroying their data key)
changes no byte of the log: the chain still verifies while the content is unreadable.
The code has no update or delete; any edit, deletion or reordering of rows breaks the chain at
the first row touched, which `verify` names.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO

from domaintune.serve.hooks import CONTENT_FIELDS, AuditRecord
from domaintune.serve.store.crypto import Keyring, KeyUnavailable, Vault
from domaintune.serve.store.db import connect, query, transaction
from domaintune.serve.store.trail import mark_audited

log = logging.getLogger("domaintune.serve.audit")
GENESIS = "0" * 64
CHAIN_PURPOSE = b"audit-chain-v1"
_SCHEMA = """CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, body TEXT NOT NULL, content BLOB, kid TEXT NOT NULL,
    prev_mac TEXT NOT NULL, mac TEXT NOT NULL)"""
_FILTERS = {"key_id": "json_extract(body, '$.key_id') = ?", "route": "json_extract(body, '$.route') = ?",
            "status": "json_extract(body, '$.status') = ?", "since": "json_extract(body, '$.ts') >= ?",
            "until": "json_extract(body, '$.ts') < ?"}


def canonical(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def chain_mac(key: bytes, prev_mac: str, seq: int, kid: str, body: str) -> str:
    return hmac.new(key, f"{prev_mac}|{seq}|{kid}|{body}".encode(), hashlib.sha256).hexdigest()


def _epoch(value) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return datetime.fromisoformat(str(value)).timestamp()


class ChainAuditor:
    """hooks.Auditor writing the hash-chained log; also `.query`, `.verify`, `.export` (app.state.audit)."""

    def __init__(self, db_path: str | Path, keyring: Keyring, vault: Vault | None = None, content: str = "none",
                 redactor=None):
        if content != "none" and vault is None:
            raise ValueError("audit content needs the vault (per-user keys)")
        self.path, self.keyring, self.vault = Path(db_path), keyring, vault
        self.content, self.redactor = content, redactor
        self.db = connect(db_path)
        self.db.execute(_SCHEMA)
        self._keys: dict[str, bytes] = {}

    def _chain_key(self, kid: str) -> bytes:
        if kid not in self._keys:
            self._keys[kid] = self.keyring.derive(kid, CHAIN_PURPOSE)
        return self._keys[kid]

    # ------------------------------------------------------------------ write
    def record(self, record: AuditRecord) -> None:
        mark_audited()  # the request has its record (store/trail.py writes no second one)
        body = {k: v for k, v in asdict(record).items() if k not in CONTENT_FIELDS}
        body["ts"] = round(time.time(), 6)
        content = self._content(record)
        body["content"] = None if content is None else {"policy": self.content,
                                                        "sha256": hashlib.sha256(content).hexdigest()}
        self._append(canonical(body), content)

    def _content(self, record: AuditRecord) -> bytes | None:
        if self.content == "none" or (record.prompt_text is None and record.answer_text is None):
            return None
        texts = {"prompt": record.prompt_text, "answer": record.answer_text}
        if self.content == "redacted":
            texts = {k: v if v is None else self.redactor.redact(v)[0] for k, v in texts.items()}
        subject = record.subject or record.principal
        return self.vault.seal(subject, canonical(texts).encode(), b"audit|" + record.request_id.encode())

    def _append(self, body: str, content: bytes | None) -> None:
        kid = self.keyring.active
        key = self._chain_key(kid)
        with transaction(self.db):  # BEGIN IMMEDIATE: head read and insert are one step, even across processes
            head = self.db.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
            self.db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                            (seq, body, content, kid, prev, chain_mac(key, prev, seq, kid, body)))

    # ------------------------------------------------------------------ read
    def query(self, key_id=None, route=None, status=None, since=None, until=None, limit: int = 100) -> list[dict]:
        wanted = {"key_id": key_id, "route": route, "status": status, "since": _epoch(since), "until": _epoch(until)}
        where = [(_FILTERS[k], v) for k, v in wanted.items() if v is not None]
        sql = "SELECT seq, body FROM audit" + (" WHERE " + " AND ".join(w for w, _ in where) if where else "")
        rows = query(self.db, sql + " ORDER BY seq DESC LIMIT ?", (*[v for _, v in where], int(limit)))
        return [{"seq": seq, **json.loads(body)} for seq, body in rows]

    def verify(self) -> dict:
        """Recompute the chain; the first bad record is named by its seq (or the position where one is missing)."""
        prev, expected, count = GENESIS, 1, 0
        with self._read() as rows:
            for seq, body, content, kid, prev_mac, mac in rows:
                reason = self._check(seq, expected, body, content, kid, prev_mac, mac, prev)
                if reason:
                    return {"ok": False, "records": count, "first_bad": expected, "reason": reason, "head": prev}
                prev, expected, count = mac.decode(), expected + 1, count + 1
        return {"ok": True, "records": count, "first_bad": None, "reason": "", "head": prev}

    def _read(self):
        return _Rows(self.path, "SELECT seq, body, content, kid, prev_mac, mac FROM audit ORDER BY seq")

    def _check(self, seq, expected, body, content, kid, prev_mac, mac, prev) -> str:
        try:
            body, kid, prev_mac, mac = (v.decode() for v in (body, kid, prev_mac, mac))
        except (AttributeError, UnicodeDecodeError):
            return f"record {seq}: a field is not UTF-8 text (the record was altered)"
        if seq != expected:
            return f"record {expected} is missing (the next one found is {seq})"
        if prev_mac != prev:
            return f"record {seq}: prev_mac does not match record {seq - 1}'s mac (records deleted or reordered)"
        try:
            key = self._chain_key(kid)
        except KeyUnavailable as err:
            return f"record {seq}: {err}"
        if not hmac.compare_digest(chain_mac(key, prev_mac, seq, kid, body), mac):
            return f"record {seq}: the mac does not match its contents (the record was altered)"
        try:
            meta = json.loads(body).get("content")
        except ValueError:
            return f"record {seq}: the body is not JSON"
        digest = None if content is None else hashlib.sha256(bytes(content)).hexdigest()
        if (meta or {}).get("sha256") != digest:
            return f"record {seq}: its content does not match the hash in the record (content altered or removed)"
        return ""

    def export(self, out: IO[str], with_content: bool = False) -> int:
        """JSONL for a SIEM: one line per record with seq, kid, prev_mac, mac and the metadata; with_content
        adds the decrypted prompt and answer where the user's key still exists (else content_error)."""
        n = 0
        with self._read() as rows:
            for seq, body, content, kid, prev_mac, mac in rows:
                line = {"seq": seq, "kid": kid.decode(), "prev_mac": prev_mac.decode(), "mac": mac.decode(),
                        **json.loads(body)}
                if with_content and content is not None:
                    line.update(self.open_content(line, content))
                out.write(canonical(line) + "\n")
                n += 1
        return n

    def open_content(self, meta: dict, content: bytes) -> dict:
        try:
            subject = meta.get("subject") or meta["principal"]
            text = self.vault.open(subject, content, b"audit|" + meta["request_id"].encode())
            return {"text": json.loads(text)}
        except (KeyUnavailable, AttributeError) as err:
            return {"content_error": str(err)}

    def close(self) -> None:
        self.db.close()


class _Rows:
    """Iterate a whole table on its own connection inside one read transaction: a consistent snapshot
    while the server keeps appending on its connection."""

    def __init__(self, path: Path, sql: str):
        self.path, self.sql = path, sql

    def __enter__(self):
        self.conn = connect(self.path)
        self.conn.text_factory = bytes  # a tampered row may hold anything: read raw, judge in _check
        self.conn.execute("BEGIN")
        return self.conn.execute(self.sql)

    def __exit__(self, *exc):
        self.conn.execute("COMMIT")
        self.conn.close()
        return False
