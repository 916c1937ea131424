"""argon2id password hashes for the console's `serve.console.users` (argon2-cffi's defaults)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
# verified against when the name is unknown, so a wrong name costs the same time as a wrong password
_DUMMY_HASH = _HASHER.hash("domaintune-no-such-user")


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a console password needs at least 8 characters")
    return _HASHER.hash(password)


def verify(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (stored_hash None)."""
    try:
        _HASHER.verify(stored_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return stored_hash is not None
