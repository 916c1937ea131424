"""Bearer authentication against the key store: every malformed header is a 401, never a 5xx."""

from __future__ import annotations

from collections.abc import Mapping

from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal
from domaintune.serve.permissions import permissions_of
from domaintune.serve.security.keys import AuthFailure, KeyStore

MAX_HEADER = 256  # a valid header is ~65 characters; anything far longer is refused before parsing
MESSAGES = {"missing": "no API key: send 'Authorization: Bearer dt-...'",
            "malformed": "the Authorization header is not 'Bearer dt-<key id>.<secret>'",
            "unknown": "invalid API key", "revoked": "this API key was revoked", "expired": "this API key expired"}


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of the one Authorization header, or AuthFailure (never echoes the value)."""
    values = headers.getlist("authorization") if hasattr(headers, "getlist") else \
        [v for v in [headers.get("authorization")] if v is not None]
    if not values:
        raise AuthFailure("missing")
    value = values[0]
    if len(values) > 1 or len(value) > MAX_HEADER or not value.isascii() or not value.isprintable():
        raise AuthFailure("malformed")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():  # the scheme is case-insensitive (RFC 7235), the token not
        raise AuthFailure("malformed")
    return token.strip()


def principal_of(key: dict) -> Principal:
    return Principal(id=key["key_id"], tenant=key["tenant"], permissions=permissions_of(key["role"]),
                     role=key["role"], key_id=key["key_id"], user=key["user"] or key["key_id"],
                     groups=frozenset(key["groups"]),
                     scopes={kind: frozenset(names) for kind, names in key["scopes"].items()})


class KeyAuthenticator:
    """hooks.Authenticator over a KeyStore; counts failures by reason (no key material in labels)."""

    def __init__(self, store: KeyStore, metrics=None):
        self.store, self.metrics = store, metrics

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        try:
            return principal_of(self.store.verify(bearer_token(headers)))
        except AuthFailure as failure:
            if self.metrics is not None:
                self.metrics.auth_failures.labels(failure.reason).inc()
            raise ApiError(401, MESSAGES[failure.reason], code="invalid_api_key",
                           headers={"WWW-Authenticate": 'Bearer realm="domaintune"'}) from None
