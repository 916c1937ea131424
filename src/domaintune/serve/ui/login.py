"""Log in (API key, password, or the open principal of a server without keys), log out, language."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.responses import RedirectResponse, Response

from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal
from domaintune.serve.permissions import permissions_of
from domaintune.serve.ui import i18n
from domaintune.serve.ui.core import LoginRequired
from domaintune.serve.ui.passwords import verify
from domaintune.serve.ui.security import (
    CSRF_FIELD,
    LANG_COOKIE,
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    cookie_args,
    new_token,
    read_form,
    safe_next,
    same,
)
from domaintune.serve.ui.sessions import api_auth

# the full /ui path on each route, not an include prefix: audit records name the route's template
router = APIRouter(prefix=PREFIX)


def _console(request: Request):
    return request.app.state.console


def open_access(console) -> bool:
    """True when the configured auth admits a request with no credential (the default open principal)."""
    try:
        api_auth(console.path.hooks).authenticate(Headers({}))
    except ApiError:
        return False
    return True


@router.get("/login")
async def login_page(request: Request, next: str = "/ui/", error: str | None = None):
    console = _console(request)
    token = new_token()
    response = console.page(request, "login.jinja", None, login_csrf=token, next=safe_next(next),
                            error=error, open_access=open_access(console), passwords=bool(console.users))
    response.set_cookie(LOGIN_COOKIE, token, **cookie_args(console.secure, 900))
    return response


def _verify_password(console, name: str, password: str) -> Principal | None:
    user = console.users.get(name)
    if not verify(user.password_hash if user else None, password):
        return None
    return Principal(id=f"user:{user.name}", role=user.role, permissions=permissions_of(user.role),
                     user=user.name, groups=frozenset(user.groups))


def _authenticate(console, form) -> tuple[Principal, str, str | None] | None:
    method = form.get("method")
    if method == "key" and form.get("api_key"):
        secret = str(form["api_key"]).strip()
        try:
            return api_auth(console.path.hooks).authenticate(Headers({"authorization": f"Bearer {secret}"})), \
                "key", secret
        except ApiError:
            return None
    if method == "password" and form.get("username"):
        principal = _verify_password(console, str(form["username"]), str(form.get("password", "")))
        return (principal, "password", None) if principal else None
    if method == "open" and open_access(console):
        return api_auth(console.path.hooks).authenticate(Headers({})), "open", None
    return None


@router.post("/login")
async def login(request: Request):
    console = _console(request)
    form = await read_form(request)
    if not same(request.cookies.get(LOGIN_COOKIE), form.get(CSRF_FIELD)):
        raise ApiError(403, "missing or wrong CSRF token on the login form: reload the login page",
                       code="csrf_failed")
    target = safe_next(form.get("next"))
    found = _authenticate(console, form)
    if found is None:
        return RedirectResponse(f"/ui/login?error=1&next={quote(target)}", status_code=303)
    principal, method, secret = found
    token, _session = console.sessions.new(principal, method, secret, console.lang(request, None))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, **cookie_args(console.secure, console.settings.session_ttl_s))
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request):
    console = _console(request)
    who = console.current(request)
    if who is None:
        raise LoginRequired
    form = await read_form(request)
    if not same(who.session.csrf, form.get(CSRF_FIELD)):
        raise ApiError(403, "missing or wrong CSRF token: reload the page and try again", code="csrf_failed")
    console.sessions.drop(who.token)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


@router.get("/lang/{lang}")
async def language(request: Request, lang: str, next: str = "/ui/") -> Response:
    """A display preference (a cookie), not server state: a plain link, so it also works on the login page."""
    console = _console(request)
    response = RedirectResponse(safe_next(next), status_code=303)
    chosen = i18n.pick(lang, console.settings.language)
    response.set_cookie(LANG_COOKIE, chosen, **cookie_args(console.secure, 365 * 86400))
    return response
