"""Console logins: an in-memory session store, and the principal a console request acts as.

A login is a random token in an HttpOnly cookie; the server keeps only its sha256, the principal,
the CSRF token and, for an API-key login, the key itself (in memory, never on disk or in a log) so
every console request re-checks the key through `hooks.auth`: a revoked key ends its console
session at the next click. Requests the console makes on the API's own routes (chat, feedback)
run as the session's principal through `SessionAuth`, which reads a context variable that only
this process can set: nothing a client sends can select a principal.
"""

from __future__ import annotations

import contextvars
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from domaintune.serve.hooks import Principal

_AS_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("domaintune_ui_principal",
                                                                                 default=None)


@dataclass
class UiSession:
    csrf: str
    principal: Principal
    method: str  # "key" | "password" | "open"
    secret: str | None  # the API key of a key login, to re-check it on every request
    expires: float
    lang: str


class UiSessions:
    """token -> UiSession, bounded (oldest dropped first) and expiring."""

    def __init__(self, ttl_s: int, max_sessions: int):
        self.ttl_s, self.max_sessions = ttl_s, max_sessions
        self._items: OrderedDict[str, UiSession] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def new(self, principal: Principal, method: str, secret: str | None, lang: str) -> tuple[str, UiSession]:
        token = secrets.token_urlsafe(32)
        session = UiSession(secrets.token_urlsafe(32), principal, method, secret, time.time() + self.ttl_s, lang)
        with self._lock:
            self._items[self._key(token)] = session
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> UiSession | None:
        if not token:
            return None
        key = self._key(token)
        with self._lock:
            session = self._items.get(key)
            if session is not None and session.expires < time.time():
                del self._items[key]
                return None
            return session

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._items.pop(self._key(token), None)


class SessionAuth:
    """`hooks.auth` as installed by the console: the console's principal inside `acting_as`, else `inner`."""

    def __init__(self, inner):
        self.inner = inner

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        principal = _AS_PRINCIPAL.get()
        return principal if principal is not None else self.inner.authenticate(headers)


def install(hooks) -> None:
    """Wrap `hooks.auth` once (again if something replaced it since)."""
    if not isinstance(hooks.auth, SessionAuth):
        hooks.auth = SessionAuth(hooks.auth)


def api_auth(hooks):
    """The configured authenticator, without the console's wrapper: what an API client meets."""
    auth = hooks.auth
    return auth.inner if isinstance(auth, SessionAuth) else auth


@contextmanager
def acting_as(principal: Principal):
    token = _AS_PRINCIPAL.set(principal)
    try:
        yield
    finally:
        _AS_PRINCIPAL.reset(token)
