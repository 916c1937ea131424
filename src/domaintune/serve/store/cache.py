"""Response cache for deterministic (temperature-0) requests, keyed so it never crosses access states.

The key is a SHA-256 over the tenant, the principal's whole scope (id, key id, role, permissions,
groups, scopes), the knowledge base's ACL fingerprint and index version (set on the Prompt by
retrieval), the model, the template and A/B variant, and the normalized request (the final prompt
token ids and every sampling setting). Semantic caches that match "similar" prompts across users
served one user's answer to another (notes/serving.md §1.9 S3); this one matches exact keys only,
and any change of grant, ACL or index is a different key, so it misses.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from domaintune.serve.hooks import Principal, Prompt
from domaintune.serve.store.crypto import Vault
from domaintune.serve.store.db import connect, query, transaction
from domaintune.serve.store.sessions import subject_of

_SCHEMA = ("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, subject TEXT NOT NULL, created REAL NOT NULL, "
           "expires REAL NOT NULL, value BLOB NOT NULL)",
           "CREATE INDEX IF NOT EXISTS cache_subject ON cache (subject)",
           "CREATE INDEX IF NOT EXISTS cache_created ON cache (created)")


def cache_key(principal: Principal, prompt: Prompt, model: str, variant: str | None, request: dict) -> str:
    scope = {"tenant": principal.tenant, "id": principal.id, "key_id": principal.key_id, "user": principal.user,
             "role": principal.role, "permissions": sorted(principal.permissions), "groups": sorted(principal.groups),
             "scopes": {k: sorted(v) for k, v in sorted(principal.scopes.items())}}
    parts = {"scope": scope, "acl": prompt.acl_fingerprint, "index": prompt.index_version, "model": model,
             "template": prompt.template_id, "variant": variant, "request": request}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path, vault: Vault, ttl_s: int, max_entries: int):
        self.db = connect(path, secure_delete=True)
        for stmt in _SCHEMA:
            self.db.execute(stmt)
        self.vault, self.ttl, self.max_entries = vault, ttl_s, max_entries
        self.hits = self.misses = 0
        self._count = threading.Lock()

    def get(self, key: str, principal: Principal) -> dict | None:
        rows = query(self.db, "SELECT subject, expires, value FROM cache WHERE key = ?", (key,))
        found = None
        if rows and rows[0][1] > time.time() and rows[0][0] == subject_of(principal):
            found = json.loads(self.vault.open(rows[0][0], rows[0][2], b"cache|" + key.encode()))
        with self._count:
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
        return found

    def put(self, key: str, principal: Principal, value: dict) -> None:
        subject, now = subject_of(principal), time.time()
        blob = self.vault.seal(subject, json.dumps(value, ensure_ascii=False).encode(), b"cache|" + key.encode())
        with transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?)",
                            (key, subject, now, now + self.ttl, blob))
            self.db.execute("DELETE FROM cache WHERE expires <= ?", (now,))
            self.db.execute("DELETE FROM cache WHERE key IN (SELECT key FROM cache ORDER BY created DESC "
                            "LIMIT -1 OFFSET ?)", (self.max_entries,))

    def erase(self, subject: str) -> int:
        with transaction(self.db):
            return self.db.execute("DELETE FROM cache WHERE subject = ?", (subject,)).rowcount

    def collect(self):
        """Prometheus collector: lookups by result and the hit ratio since start."""
        lookups = CounterMetricFamily("domaintune_cache_lookups", "Response-cache lookups.", labels=["result"])
        lookups.add_metric(["hit"], self.hits)
        lookups.add_metric(["miss"], self.misses)
        ratio = GaugeMetricFamily("domaintune_cache_hit_ratio", "Response-cache hits / lookups since start.")
        total = self.hits + self.misses
        ratio.add_metric([], self.hits / total if total else 0.0)
        yield lookups
        yield ratio

    def close(self) -> None:
        self.db.close()
