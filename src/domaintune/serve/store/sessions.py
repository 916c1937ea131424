"""Server-side dialog sessions: owned by the principal that made them, encrypted, with a TTL.

Another principal's session id behaves exactly like an unknown one (404), so ids reveal nothing.
Messages are sealed under the owner's data key with AAD = the session id: a blob copied into
another session does not open. Two backends share the logic here: SQLite (default) and Redis
(several server processes); the backends only store opaque blobs.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal
from domaintune.serve.store.crypto import Vault
from domaintune.serve.store.db import connect, query, transaction

_SCHEMA = ("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, owner TEXT NOT NULL, subject TEXT NOT NULL, "
           "created REAL NOT NULL, updated REAL NOT NULL, expires REAL NOT NULL)",
           "CREATE TABLE IF NOT EXISTS messages (session_id TEXT NOT NULL, n INTEGER NOT NULL, blob BLOB NOT NULL, "
           "PRIMARY KEY (session_id, n))",
           "CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner)",
           "CREATE INDEX IF NOT EXISTS sessions_subject ON sessions (subject)")


def owner_of(principal: Principal) -> str:
    return f"{principal.tenant}/{principal.id}"


def subject_of(principal: Principal) -> str:
    """Whose data this is for erasure: the key's user, else the principal itself."""
    return principal.user or principal.id


def not_found(session_id: str) -> ApiError:
    return ApiError(404, f"session '{session_id[:64]}' does not exist (or expired, or belongs to another key)",
                    code="session_not_found", param="session_id")


class SqliteSessions:
    def __init__(self, path: str | Path):
        self.db = connect(path, secure_delete=True)  # deleted sessions leave no ciphertext in free pages
        for stmt in _SCHEMA:
            self.db.execute(stmt)

    def insert(self, sid: str, owner: str, subject: str, now: float, ttl: int) -> None:
        with transaction(self.db):
            self.db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                            (sid, owner, subject, now, now, now + ttl))

    def meta(self, sid: str) -> dict | None:
        rows = query(self.db, "SELECT owner, subject, created, updated, expires FROM sessions WHERE id = ?", (sid,))
        return dict(zip(("owner", "subject", "created", "updated", "expires"), rows[0], strict=True)) if rows else None

    def blobs(self, sid: str) -> list[bytes]:
        return [r[0] for r in query(self.db, "SELECT blob FROM messages WHERE session_id = ? ORDER BY n", (sid,))]

    def append(self, sid: str, blobs: list[bytes], now: float, ttl: int) -> None:
        with transaction(self.db):
            start = self.db.execute("SELECT COALESCE(MAX(n), -1) + 1 FROM messages WHERE session_id = ?",
                                    (sid,)).fetchone()[0]
            self.db.executemany("INSERT INTO messages VALUES (?, ?, ?)",
                                [(sid, start + i, b) for i, b in enumerate(blobs)])
            self.db.execute("UPDATE sessions SET updated = ?, expires = ? WHERE id = ?", (now, now + ttl, sid))

    def ids(self, column: str, value: str) -> list[str]:
        assert column in ("owner", "subject")
        return [r[0] for r in query(self.db, f"SELECT id FROM sessions WHERE {column} = ? ORDER BY created", (value,))]

    def delete(self, sids: list[str]) -> None:
        with transaction(self.db):
            for sid in sids:
                self.db.execute("DELETE FROM messages WHERE session_id = ?", (sid,))
                self.db.execute("DELETE FROM sessions WHERE id = ?", (sid,))

    def expired(self, now: float) -> list[str]:
        return [r[0] for r in query(self.db, "SELECT id FROM sessions WHERE expires <= ?", (now,))]

    def close(self) -> None:
        self.db.close()


class RedisSessions:
    """`dt:s:{id}` hash (owner, subject, created, updated, expires), `dt:m:{id}` list of blobs, and index sets
    per owner and subject. Keys expire in Redis itself; the index sets are pruned when read."""

    def __init__(self, url: str):
        import redis

        self.r = redis.Redis.from_url(url)
        try:
            self.r.ping()
        except redis.RedisError as err:
            from domaintune.errors import ConfigError

            raise ConfigError([f"serve.sessions.redis_url: cannot reach {url}: {err}"]) from None

    def insert(self, sid: str, owner: str, subject: str, now: float, ttl: int) -> None:
        pipe = self.r.pipeline()
        pipe.hset(f"dt:s:{sid}", mapping={"owner": owner, "subject": subject, "created": now, "updated": now,
                                          "expires": now + ttl})
        pipe.expire(f"dt:s:{sid}", ttl)
        pipe.sadd(f"dt:o:{owner}", sid)
        pipe.sadd(f"dt:u:{subject}", sid)
        pipe.execute()

    def meta(self, sid: str) -> dict | None:
        raw = self.r.hgetall(f"dt:s:{sid}")
        if not raw:
            return None
        m = {k.decode(): v.decode() for k, v in raw.items()}
        return {"owner": m["owner"], "subject": m["subject"], **{k: float(m[k]) for k in ("created", "updated",
                                                                                          "expires")}}

    def blobs(self, sid: str) -> list[bytes]:
        return list(self.r.lrange(f"dt:m:{sid}", 0, -1))

    def append(self, sid: str, blobs: list[bytes], now: float, ttl: int) -> None:
        pipe = self.r.pipeline()
        pipe.rpush(f"dt:m:{sid}", *blobs)
        pipe.hset(f"dt:s:{sid}", mapping={"updated": now, "expires": now + ttl})
        pipe.expire(f"dt:s:{sid}", ttl)
        pipe.expire(f"dt:m:{sid}", ttl)
        pipe.execute()

    def ids(self, column: str, value: str) -> list[str]:
        index = f"dt:{'o' if column == 'owner' else 'u'}:{value}"
        found = []
        for raw in self.r.smembers(index):
            sid = raw.decode()
            if self.r.exists(f"dt:s:{sid}"):
                found.append(sid)
            else:
                self.r.srem(index, sid)  # expired by Redis
        return found

    def delete(self, sids: list[str]) -> None:
        for sid in sids:
            meta = self.meta(sid)
            pipe = self.r.pipeline()
            pipe.delete(f"dt:s:{sid}", f"dt:m:{sid}")
            if meta:
                pipe.srem(f"dt:o:{meta['owner']}", sid)
                pipe.srem(f"dt:u:{meta['subject']}", sid)
            pipe.execute()

    def expired(self, now: float) -> list[str]:
        return []  # Redis expires keys itself

    def close(self) -> None:
        self.r.close()


class Sessions:
    """app.state.sessions: create / messages / list / delete per principal, plus append and erase."""

    def __init__(self, backend, vault: Vault, ttl_s: int, max_per_owner: int = 1000):
        self.backend, self.vault, self.ttl, self.max_per_owner = backend, vault, ttl_s, max_per_owner

    def create(self, principal: Principal) -> str:
        now = time.time()
        self.backend.delete(self.backend.expired(now))
        owner = owner_of(principal)
        if len(self.backend.ids("owner", owner)) >= self.max_per_owner:
            raise ApiError(429, f"this key holds {self.max_per_owner} sessions (serve.sessions.max_sessions_per_owner)"
                                "; delete some with DELETE /v1/sessions/{id}", code="too_many_sessions")
        sid = "sess_" + secrets.token_urlsafe(18)
        self.backend.insert(sid, owner, subject_of(principal), now, self.ttl)
        return sid

    def _own(self, principal: Principal, sid: str) -> dict:
        meta = self.backend.meta(sid) if isinstance(sid, str) and len(sid) <= 64 else None
        if meta is None or meta["owner"] != owner_of(principal) or meta["expires"] <= time.time():
            raise not_found(str(sid))
        return meta

    def messages(self, principal: Principal, sid: str) -> list[dict]:
        meta = self._own(principal, sid)
        aad = b"session|" + sid.encode()
        return [json.loads(self.vault.open(meta["subject"], blob, aad)) for blob in self.backend.blobs(sid)]

    def info(self, principal: Principal, sid: str) -> dict:
        meta = self._own(principal, sid)
        return {"id": sid, "created": meta["created"], "updated": meta["updated"], "expires": meta["expires"]}

    def list(self, principal: Principal) -> list[dict]:
        out = []
        for sid in self.backend.ids("owner", owner_of(principal)):
            meta = self.backend.meta(sid)
            if meta and meta["expires"] > time.time():
                out.append({"id": sid, "created": meta["created"], "updated": meta["updated"],
                            "expires": meta["expires"]})
        return sorted(out, key=lambda s: s["created"])

    def append(self, principal: Principal, sid: str, messages: list[dict]) -> None:
        meta = self._own(principal, sid)
        aad = b"session|" + sid.encode()
        blobs = [self.vault.seal(meta["subject"], json.dumps(m, ensure_ascii=False).encode(), aad) for m in messages]
        self.backend.append(sid, blobs, time.time(), self.ttl)

    def delete(self, principal: Principal, sid: str) -> None:
        self._own(principal, sid)
        self.backend.delete([sid])

    def erase(self, subject: str) -> int:
        sids = self.backend.ids("subject", subject)
        self.backend.delete(sids)
        return len(sids)

    def close(self) -> None:
        self.backend.close()
