"""Helpers of the records tests: keyrings, records settings, and an authenticator with many principals."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal


def write_keyring(path: Path, *kids: str) -> Path:
    """A keyring file with one fresh key per id (the last one seals new data)."""
    lines = [f"{kid} {base64.b64encode(os.urandom(32)).decode()}" for kid in kids]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def records_settings(root: Path, *, audit: bool = True, content: str = "encrypted", sessions: bool = False,
                     cache: bool = False, backend: str = "sqlite", redis_url: str | None = None,
                     keyring: Path | None = None, **extra) -> dict:
    """serve: overrides enabling the records stores under `root` (absolute paths: no config file here)."""
    keyring = keyring or write_keyring(root / "keyring", "k1")
    out = {"encryption": {"keyring_file": str(keyring), "user_keys_db": str(root / "user-keys.sqlite")},
           "audit": {"enabled": audit, "db": str(root / "audit.sqlite"), "content": content},
           "sessions": {"enabled": sessions, "db": str(root / "sessions.sqlite"), "backend": backend, **extra},
           "cache": {"enabled": cache, "db": str(root / "cache.sqlite")}}
    if redis_url:
        out["sessions"]["redis_url"] = redis_url
    return out


class BearerPrincipals:
    """`Authorization: Bearer NAME` -> the principal registered under NAME (401 otherwise)."""

    def __init__(self, **principals: Principal):
        self.principals = principals

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.principals:
            raise ApiError(401, "unknown key", code="invalid_api_key")
        return self.principals[token]


def principal(name: str, **kw) -> Principal:
    return Principal(id=name, user=kw.pop("user", name), key_id=f"key-{name}", role="user", **kw)


def client_as(server, key: str):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)
