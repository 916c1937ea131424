"""AES-GCM at rest: a master keyring (rotation) and per-user data keys wrapped by it (crypto-shredding).

Every ciphertext names the key that sealed it, so adding a key to the keyring (rotation) keeps
old data readable, and a missing or wrong key fails closed with a message naming the key id.
Each blob is bound to its place with AAD (table, row id, owner), so ciphertexts cannot be
swapped between rows or users without the open failing.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domaintune.config.serve_records import EncryptionConfig
from domaintune.errors import ConfigError, DomainTuneError
from domaintune.serve.store.db import connect, transaction

KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MASTER_MAGIC, USER_MAGIC = b"dtk1", b"dtu1"
NONCE = 12  # 96-bit random nonces: the GCM standard size; 2^32 messages per key stay far inside its bound


class KeyUnavailable(DomainTuneError):
    """A ciphertext cannot be opened: its key is missing, destroyed or wrong, or the data was altered."""


def parse_keyring(text: str, source: str) -> dict[str, bytes]:
    """`KEY_ID BASE64` per line (or ';'-separated); order kept: the last key seals new data."""
    keys: dict[str, bytes] = {}
    for n, raw in enumerate(re.split(r"[\n;]", text), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not KEY_ID.match(parts[0]):
            raise ConfigError([f"{source}: entry {n}: write `KEY_ID BASE64_KEY` (key id: letters, digits, . _ -)"])
        try:
            key = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError([f"{source}: entry {n} ('{parts[0]}'): the key is not base64"]) from None
        if len(key) != 32:
            raise ConfigError([f"{source}: entry {n} ('{parts[0]}'): the key has {len(key)} bytes, AES-256 needs 32 "
                               "(make one with `openssl rand -base64 32`)"])
        if parts[0] in keys:
            raise ConfigError([f"{source}: key id '{parts[0]}' appears twice"])
        keys[parts[0]] = key
    if not keys:
        raise ConfigError([f"{source}: the keyring holds no key"])
    return keys


class Keyring:
    """Master keys by id; `active` seals new data."""

    def __init__(self, keys: dict[str, bytes]):
        if not keys:
            raise ConfigError(["serve.encryption: the keyring holds no key"])
        self.keys = dict(keys)
        self.active = list(keys)[-1]

    @classmethod
    def load(cls, cfg: EncryptionConfig) -> Keyring:
        if cfg.keyring_env is not None:
            text = os.environ.get(cfg.keyring_env)
            if not text:
                raise ConfigError([f"serve.encryption.keyring_env: the environment variable {cfg.keyring_env} is "
                                   "not set: refusing to start without the keys (nothing is stored unencrypted)"])
            return cls(parse_keyring(text, f"${cfg.keyring_env}"))
        if cfg.keyring_file is None:
            raise ConfigError(["serve.encryption: set keyring_file or keyring_env"])
        path = Path(cfg.keyring_file)
        if not path.is_file():
            raise ConfigError([f"serve.encryption.keyring_file: file not found: {path}: refusing to start "
                               "without the keys (nothing is stored unencrypted)"])
        return cls(parse_keyring(path.read_text(encoding="utf-8"), str(path)))

    def derive(self, kid: str, purpose: bytes) -> bytes:
        """A sub-key for one purpose (the audit chain's HMAC), so no key is used for two jobs."""
        return HKDF(hashes.SHA256(), 32, salt=None, info=b"domaintune/" + purpose).derive(self._key(kid))

    def _key(self, kid: str) -> bytes:
        if kid not in self.keys:
            raise KeyUnavailable(f"master key '{kid}' is not in the keyring (serve.encryption): add it back to read "
                                 "data sealed under it")
        return self.keys[kid]

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        kid = self.active.encode()
        nonce = os.urandom(NONCE)
        return MASTER_MAGIC + bytes([len(kid)]) + kid + nonce + AESGCM(self.keys[self.active]).encrypt(
            nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        if not blob.startswith(MASTER_MAGIC) or len(blob) < 6:
            raise KeyUnavailable("not a domaintune master-key ciphertext")
        size = blob[4]
        kid = blob[5:5 + size].decode("ascii", "replace")
        body = blob[5 + size:]
        try:
            return AESGCM(self._key(kid)).decrypt(body[:NONCE], body[NONCE:], aad)
        except InvalidTag:
            raise KeyUnavailable(f"master key '{kid}' does not open this data: a wrong key under that id, or the "
                                 "data was altered") from None


_USER_KEYS = """CREATE TABLE IF NOT EXISTS user_keys (
    subject TEXT PRIMARY KEY, wrapped BLOB NOT NULL, created REAL NOT NULL)"""


class Vault:
    """Per-user data keys (random, 256-bit), stored wrapped by the master keyring.

    Destroying a user's key makes everything sealed under it unreadable, wherever copies live
    (SQLite pages, Redis snapshots, backups): erasure without rewriting the audit chain."""

    def __init__(self, keyring: Keyring, db_path: str | Path):
        self.keyring = keyring
        self.db = connect(db_path, secure_delete=True)  # a destroyed key must not linger in free pages
        self.db.execute(_USER_KEYS)
        self._lock = threading.Lock()  # no in-memory key cache: an erasure by another process takes effect at once

    def _aad(self, subject: str) -> bytes:
        return b"user_keys|" + subject.encode()

    def _key(self, subject: str, create: bool) -> bytes | None:
        with self._lock:
            row = self.db.execute("SELECT wrapped FROM user_keys WHERE subject = ?", (subject,)).fetchone()
            if row is None:
                if not create:
                    return None
                key = AESGCM.generate_key(256)
                with transaction(self.db):
                    self.db.execute("INSERT INTO user_keys VALUES (?, ?, ?)",
                                    (subject, self.keyring.seal(key, self._aad(subject)), time.time()))
            else:
                key = self.keyring.open(row[0], self._aad(subject))
            return key

    def seal(self, subject: str, plaintext: bytes, aad: bytes) -> bytes:
        key = self._key(subject, create=True)
        nonce = os.urandom(NONCE)
        return USER_MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, aad + b"|" + subject.encode())

    def open(self, subject: str, blob: bytes, aad: bytes) -> bytes:
        key = self._key(subject, create=False)
        if key is None:
            raise KeyUnavailable(f"the data key of '{subject}' is destroyed or was never made: the content is "
                                 "unreadable (erased)")
        if not blob.startswith(USER_MAGIC):
            raise KeyUnavailable("not a domaintune user-key ciphertext")
        try:
            return AESGCM(key).decrypt(blob[4:4 + NONCE], blob[4 + NONCE:], aad + b"|" + subject.encode())
        except InvalidTag:
            raise KeyUnavailable(f"the data key of '{subject}' does not open this data (altered or moved)") from None

    def destroy(self, subject: str) -> bool:
        """Crypto-shred: delete the wrapped key (secure_delete zeroes its page). True if there was one.
        A later request by the same user gets a fresh key, which opens none of the old data."""
        with self._lock:
            with transaction(self.db):
                cur = self.db.execute("DELETE FROM user_keys WHERE subject = ?", (subject,))
            return cur.rowcount > 0

    def close(self) -> None:
        self.db.close()
