"""The SQLite key store: opaque tokens `dt-<key_id>.<secret>` shown once; only HMAC-SHA256(server secret,
token) is stored. Lookup is by the public key id, comparison is constant-time, and every request
reads the row again, so a revocation or an expiry takes effect on the next request (no cache)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from datetime import datetime
from pathlib import Path

from domaintune.errors import ConfigError
from domaintune.serve.permissions import ROLES

TOKEN = re.compile(r"dt-([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")
SCOPE_KINDS = ("models", "kbs", "tools")
LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "concurrent")
_SCHEMA = """CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, mac BLOB NOT NULL, created REAL NOT NULL,
  expires REAL, revoked REAL, user TEXT, groups TEXT NOT NULL, scopes TEXT NOT NULL, tenant TEXT NOT NULL,
  limits TEXT NOT NULL)"""


def read_server_secret(path: str | Path) -> bytes:
    """The HMAC key; created (32 random bytes, hex, mode 0600) if absent; refused when others may read it."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError([f"serve.auth.secret_file: {path} is readable by group or others "
                           f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"])
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise ConfigError([f"serve.auth.secret_file: {path} holds {len(secret)} bytes; it needs at least 32 "
                           "(delete it to have a new one created; existing keys then stop working)"])
    return secret


class AuthFailure(Exception):
    """Why a token was refused: missing, malformed, unknown, revoked, expired (a metrics label)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _epoch(value) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"expires_at must be a datetime or epoch seconds, got {type(value).__name__}")


class KeyStore:
    def __init__(self, db: str | Path, secret: bytes | None):
        """`secret` None: list and revoke only (the CLI's --db without --secret-file)."""
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        self._secret = secret
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._dummy = self._mac("dt-000000000000." + "0" * 43) if secret else b""

    @classmethod
    def open(cls, db: str | Path, secret_file: str | Path) -> KeyStore:
        return cls(db, read_server_secret(secret_file))

    def _mac(self, token: str) -> bytes:
        if self._secret is None:
            raise ConfigError(["creating or checking keys needs the server secret: give --secret-file or the "
                               "run config"])
        return hmac.new(self._secret, token.encode("ascii"), hashlib.sha256).digest()

    def create(self, name: str, role: str, *, expires_at=None, scopes=None, user=None, groups=(),
               tenant: str = "default", limits: dict | None = None) -> tuple[str, str]:
        """(key_id, token): the token is the only copy of the secret, to be shown once."""
        if role not in ROLES:
            raise ValueError(f"unknown role '{role}'; roles: {', '.join(sorted(ROLES))}")
        scopes = {k: sorted(v) for k, v in (scopes or {}).items()}
        if bad := set(scopes) - set(SCOPE_KINDS):
            raise ValueError(f"unknown scope kind(s) {sorted(bad)}; kinds: {', '.join(SCOPE_KINDS)}")
        limits = {k: int(v) for k, v in (limits or {}).items() if v is not None}
        if bad := set(limits) - set(LIMIT_KEYS):
            raise ValueError(f"unknown limit(s) {sorted(bad)}; limits: {', '.join(LIMIT_KEYS)}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        token = f"dt-{key_id}.{secret}"
        with self._lock:
            self._db.execute("INSERT INTO keys VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                             (key_id, name, role, self._mac(token), time.time(), _epoch(expires_at), None, user,
                              json.dumps(sorted(groups)), json.dumps(scopes), tenant, json.dumps(limits)))
        return key_id, token

    def verify(self, token: str) -> dict:
        """The key's row (no MAC) for a valid token, else AuthFailure."""
        m = TOKEN.fullmatch(token)
        if m is None:
            raise AuthFailure("malformed")
        with self._lock:
            row = self._db.execute("SELECT * FROM keys WHERE id = ?", (m.group(1),)).fetchone()
        mac = self._mac(token)
        if not hmac.compare_digest(mac, row[3] if row else self._dummy) or row is None:
            raise AuthFailure("unknown")
        key = self._row(row)
        if key["revoked_at"] is not None:
            raise AuthFailure("revoked")
        if key["expires_at"] is not None and key["expires_at"] <= time.time():
            raise AuthFailure("expired")
        return key

    @staticmethod
    def _row(row) -> dict:
        return {"key_id": row[0], "name": row[1], "role": row[2], "created_at": row[4], "expires_at": row[5],
                "revoked_at": row[6], "user": row[7], "groups": json.loads(row[8]), "scopes": json.loads(row[9]),
                "tenant": row[10], "limits": json.loads(row[11])}

    def get(self, key_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
        return self._row(row) if row else None

    def list(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM keys ORDER BY created").fetchall()
        return [self._row(r) for r in rows]

    def revoke(self, key_id: str) -> None:
        with self._lock:
            cur = self._db.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                   (time.time(), key_id))
            if cur.rowcount == 0 and self.get(key_id) is None:
                raise KeyError(key_id)

    def close(self) -> None:
        self._db.close()
