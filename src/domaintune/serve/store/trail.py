"""One audit record per request, whatever route answered it and however it ended.

The generation, session and review routes write their own detailed record (model, tokens, rules,
session...). Every other request — /v1/models, /metrics, /v1/feedback, the key, experiment and
console routes, a 404, or a 401/403/429 refused before a handler ran — gets a plain record from
`AuditEveryRequest`: route template, method, status, the key id once authentication got that far
(never the key), latency. Nothing is audited twice: whatever writes a record while the request
runs marks it (`mark_audited`, called by `Marking` and by the chain auditor itself), and the
middleware then writes nothing.

Not audited here: liveness (/health, /ready: polled every few seconds by load balancers, they carry
no data) and the web console's page views (GET under /ui). What the console changes — a key created
or revoked, a review decision, a login, a re-index — is a POST and gets its record like an API call,
with the logged-in key as principal (the console checks every permission through the request path,
which notes the principal here); its chat runs through the request path and writes its own record.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from domaintune.serve.hooks import AuditRecord, Principal
from domaintune.serve.permissions import LIVENESS

UNMATCHED = "<no route>"  # a 404 for a path no route serves: the path itself is not recorded (it may hold anything)
NOT_AUDITED_PREFIXES = ("/ui/", )  # the console's page views (serve/ui): see the module docstring
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class _Trail:
    principal: Principal | None = None
    audited: bool = False
    detail: dict[str, str] = field(default_factory=dict)


_current: ContextVar[_Trail | None] = ContextVar("domaintune_audit_trail", default=None)


def note_principal(principal: Principal) -> None:
    """The request's principal, for its audit record (RequestPath.principal calls this on every check)."""
    trail = _current.get()
    if trail is not None:
        trail.principal = principal


def note(**detail) -> None:
    """Add fields to the `detail` of the request's plain record (e.g. which key an admin created)."""
    trail = _current.get()
    if trail is not None:
        trail.detail.update({k: str(v) for k, v in detail.items() if v is not None})


def mark_audited() -> None:
    trail = _current.get()
    if trail is not None:
        trail.audited = True


class Marking:
    """hooks.Auditor wrapper: a record written during a request marks that request audited."""

    def __init__(self, inner):
        self.inner = inner

    def record(self, record: AuditRecord) -> None:
        trail = _current.get()
        if trail is not None:
            trail.audited = True
            who = trail.principal
            if who is not None and not record.principal:  # refused after authentication (403, 429...): name the key
                record.principal, record.tenant, record.key_id = who.id, who.tenant, who.key_id
        self.inner.record(record)

    def __getattr__(self, name):  # query/verify/... of the wrapped auditor stay reachable
        return getattr(self.inner, name)


def _route_of(scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    if path:
        return path
    # a plain ASGI endpoint added with app.router.add_route (the console's chat stream) is not always noted in
    # the scope; its path is a fixed string, so an exact match names it (any other path stays unrecorded)
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
    return scope.get("path") if scope.get("path") in {getattr(r, "path", None) for r in routes} else UNMATCHED


class AuditEveryRequest:
    """Pure ASGI middleware (no buffering: streams pass through untouched). `auditor()` returns the auditor
    to write to, read per request: the request path's hook may be wrapped after the middleware is added."""

    def __init__(self, app, auditor):
        self.app, self.auditor = app, auditor

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        page_view = (path == "/ui" or path.startswith(NOT_AUDITED_PREFIXES)) and scope.get("method") in SAFE_METHODS
        if scope["type"] != "http" or path in LIVENESS or page_view:
            await self.app(scope, receive, send)
            return
        outer = _current.get()  # set when the console calls an API route in-process (serve/ui/inprocess.py)
        if outer is not None:  # the API route's own record (always written, below) stands for the console request
            outer.audited = True
        trail, started, status = _Trail(), time.perf_counter(), [500]  # no response sent: the app failed
        token = _current.set(trail)

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body") and not trail.audited:
                trail.audited = True  # committed before the client sees the end of the answer
                self._record(scope, trail, status[0], started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            status[0] = 499  # the client went away before an answer
            raise
        finally:
            _current.reset(token)
            if not trail.audited:
                self._record(scope, trail, status[0], started)

    def _record(self, scope, trail: _Trail, status: int, started: float) -> None:
        who = trail.principal
        self.auditor().record(AuditRecord(
            request_id=uuid.uuid4().hex[:24], route=_route_of(scope), status=status,
            principal=who.id if who else "", tenant=who.tenant if who else "",
            key_id=who.key_id if who else None, user=who.user if who else None,
            subject=(who.user or who.id) if who else None,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            detail={"method": scope.get("method", ""), **trail.detail}))
