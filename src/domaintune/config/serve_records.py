"""The records half of `serve:`: `audit:`, `encryption:`, `sessions:` and `cache:`.

Everything these write that holds user text is encrypted with AES-GCM under keys from
`encryption:`, so turning on sessions, the cache or audit content without a keyring is a
config error, not a plaintext fallback (fail closed). docs/serve-records.md explains each key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from domaintune.config.base import FilePath, Section
from domaintune.config.data import PiiConfig

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class EncryptionConfig(Section):
    keyring_file: FilePath | None = Field(
        None, description="Master-key file (relative to the config file; mode 0600): one `KEY_ID BASE64_32_BYTES` "
                          "per line; the last line encrypts new data, earlier lines keep old data readable "
                          "(rotation). Make one with `echo \"k1 $(openssl rand -base64 32)\" > keyring`.")
    keyring_env: str | None = Field(
        None, description="Name of an environment variable holding the keyring (same format, lines or ';'), "
                          "used instead of keyring_file; the key itself is never written in the YAML.")
    user_keys_db: FilePath = Field(
        "records/user-keys.sqlite", description="SQLite file of per-user data keys, each wrapped by the master key; "
                                                "erasing a user destroys theirs (crypto-shredding).")

    @field_validator("keyring_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError(f"'{value}' is not an environment variable name (write the variable's NAME, e.g. "
                             "DOMAINTUNE_KEYRING, never the key itself)")
        return value

    @property
    def configured(self) -> bool:
        return self.keyring_file is not None or self.keyring_env is not None


class AuditConfig(Section):
    enabled: bool = Field(False, description="Write one hash-chained record per request (failures included).")
    db: FilePath = Field("records/audit.sqlite", description="The append-only audit log (SQLite, WAL, fsync per "
                                                             "record).")
    content: Literal["none", "redacted", "encrypted"] = Field(
        "none", description="Prompts and answers in the log: none; redacted (PII masked with audit.pii); encrypted "
                            "(full text under the user's data key: unreadable once the user is erased).")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="What content: redacted masks (types, patterns, "
                                                                  "allow list); `enabled` is not read here.")


class SessionsConfig(Section):
    enabled: bool = Field(False, description="Keep dialogs server-side: chat requests may send session_id.")
    backend: Literal["sqlite", "redis"] = Field("sqlite", description="Where sessions live.")
    db: FilePath = Field("records/sessions.sqlite", description="SQLite file (backend: sqlite).")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server (backend: redis); messages are "
                                                                   "encrypted before they reach it.")
    ttl_s: int = Field(86_400, ge=1, description="A session expires this many seconds after its last turn.")
    context_tokens: int | None = Field(
        None, ge=16, description="Token budget of history + new messages, counted with the server's tokenizer; the "
                                 "oldest turns are dropped to fit. Default: half the model's context.")
    max_sessions_per_owner: int = Field(1000, ge=1, description="Creating one more answers 429 (delete old ones).")


class CacheConfig(Section):
    enabled: bool = Field(False, description="Answer repeated temperature-0 requests from a cache keyed by tenant, "
                                             "principal scope, KB ACL fingerprint + index version, model, template "
                                             "and the normalized request.")
    db: FilePath = Field("records/cache.sqlite", description="SQLite file of cached answers (encrypted).")
    ttl_s: int = Field(3600, ge=1, description="Seconds a cached answer is served.")
    max_entries: int = Field(10_000, ge=1, description="Oldest entries are evicted above this.")


def records_problems(encryption: EncryptionConfig, audit: AuditConfig, sessions: SessionsConfig,
                     cache: CacheConfig, rules: bool = False) -> list[str]:
    """What `domaintune validate` reports before anything starts: a keyring is needed and must be readable.
    `rules`: serve.rules is set (its review queue seals flagged prompts and answers)."""
    needs = [name for name, on in (("audit", audit.enabled), ("sessions", sessions.enabled),
                                   ("cache", cache.enabled), ("rules (the review queue)", rules)) if on]
    if not needs:
        return []
    if not encryption.configured:
        return [f"serve.encryption: {', '.join(needs)} need a keyring (the audit chain's HMAC key and the encryption "
                "keys come from it): set serve.encryption.keyring_file or serve.encryption.keyring_env"]
    if encryption.keyring_env is not None and not os.environ.get(encryption.keyring_env):
        return [f"serve.encryption.keyring_env: the environment variable {encryption.keyring_env} is not set"]
    if encryption.keyring_env is None and not Path(encryption.keyring_file).is_file():
        return [f"serve.encryption.keyring_file: file not found: {encryption.keyring_file}"]
    return []
