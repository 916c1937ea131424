"""Headers every /ui response carries, cookie settings, and the CSRF checks.

CSRF uses a synchronizer token: each login session holds a random token, every form carries it
in a hidden `csrf` field and every state-changing fetch in an `X-CSRF-Token` header (console.js
reads it from a <meta> tag); the server compares in constant time and refuses a mismatch with
403. The login form, which has no session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hmac
import secrets

from domaintune.serve.errors import ApiError

PREFIX = "/ui"
SESSION_COOKIE, LOGIN_COOKIE, LANG_COOKIE = "dt_ui", "dt_ui_login", "dt_ui_lang"
CSRF_HEADER, CSRF_FIELD = "x-csrf-token", "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin")]


class SecurityHeaders:
    """Pure ASGI middleware (no buffering, so streamed answers stay streamed): adds HEADERS to /ui responses
    and `Cache-Control: no-store` to everything but static assets."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            return await self.app(scope, receive, send)
        static = path.startswith(PREFIX + "/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in HEADERS if h[0] not in names]
                if not static and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def check_csrf(expected: str, sent: str | None) -> None:
    if not same(expected, sent):
        raise ApiError(403, "missing or wrong CSRF token: reload the page and try again", code="csrf_failed")


def cookie_args(secure: bool, max_age: int) -> dict:
    return {"httponly": True, "secure": secure, "samesite": "strict", "path": PREFIX, "max_age": max_age}


def safe_next(target: str | None) -> str:
    """Only a path inside the console: never another site (an open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target \
            and "://" not in target:
        return target
    return PREFIX + "/"


FORM_CAP = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


async def read_form(request) -> dict[str, str]:
    """A posted HTML form (url-encoded; the console has no file uploads), first value of each field."""
    from urllib.parse import parse_qsl

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > FORM_CAP:
            raise ApiError(413, f"a console form is at most {FORM_CAP} bytes", code="request_too_large")
    if body and kind != FORM_TYPE:
        raise ApiError(415, f"a console form must be sent as {FORM_TYPE}, not '{kind}'", code="unsupported_media")
    form: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(key, value)
    return form
