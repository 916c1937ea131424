"""The console's shared state (app.state.console): settings, sessions, templates, and who is asking."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse

from domaintune.config.console import ConsoleConfig
from domaintune.serve import permissions as perms
from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal
from domaintune.serve.ui import i18n
from domaintune.serve.ui.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LANG_COOKIE,
    SAFE_METHODS,
    SESSION_COOKIE,
    check_csrf,
    read_form,
)
from domaintune.serve.ui.sessions import UiSession, UiSessions, acting_as, api_auth, install

# (permission, url, string key) of the navigation, in order; a link shows only when the principal holds it
NAV = [(perms.CHAT, "/ui/chat", "nav.chat"), (perms.RUNS, "/ui/runs", "nav.runs"),
       (perms.KEYS, "/ui/admin/keys", "nav.keys"), (perms.AUDIT, "/ui/admin/audit", "nav.audit"),
       (perms.REVIEW, "/ui/admin/review", "nav.review"),
       (perms.EXPERIMENTS, "/ui/admin/experiments", "nav.experiments"),
       (perms.KB_MANAGE, "/ui/admin/kb", "nav.kb")]


class LoginRequired(Exception):
    """A page asked without a valid login: answered with a redirect to the login page."""


@dataclass
class Who:
    session: UiSession
    principal: Principal
    token: str


class Console:
    def __init__(self, app, settings: ConsoleConfig, secure: bool):
        self.app, self.settings, self.secure = app, settings, secure
        self.sessions = UiSessions(settings.session_ttl_s, settings.max_sessions)
        self.users = {u.name: u for u in settings.users}
        self.env = Environment(loader=PackageLoader("domaintune.serve.ui", "templates"), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = _when

    @property
    def path(self):
        return self.app.state.path

    def backend(self, name: str):
        """app.state.<name>, or None when that backend is not configured."""
        return getattr(self.app.state, name, None)

    # ------------------------------------------------------------------ who is asking
    def current(self, request: Request) -> Who | None:
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token)
        if session is None:
            return None
        principal = self._still_valid(session)
        if principal is None:
            self.sessions.drop(token)
            return None
        return Who(session, principal, token)

    def _still_valid(self, session: UiSession) -> Principal | None:
        """The session's principal as the API would see it now: a revoked key or removed user logs out."""
        auth = api_auth(self.path.hooks)
        try:
            if session.method == "key":
                return auth.authenticate(Headers({"authorization": f"Bearer {session.secret}"}))
            if session.method == "open":
                return auth.authenticate(Headers({}))
        except ApiError:
            return None
        return session.principal if session.principal.user in self.users else None

    def require(self, request: Request, permission: str) -> Who:
        """A logged-in principal holding `permission` (the request path's own authorizer decides); the CSRF
        header on state-changing fetches. LoginRequired or ApiError(403) otherwise."""
        who = self._allowed(request, permission)
        if request.method not in SAFE_METHODS:
            check_csrf(who.session.csrf, request.headers.get(CSRF_HEADER))
        return who

    async def require_form(self, request: Request, permission: str):
        """(who, form) of a posted form, refused (403) unless its hidden `csrf` field matches the session's."""
        who = self._allowed(request, permission)
        form = await read_form(request)
        check_csrf(who.session.csrf, form.get(CSRF_FIELD))
        return who, form

    def _allowed(self, request: Request, permission: str) -> Who:
        who = self.current(request)
        if who is None:
            raise LoginRequired
        self.check(who.principal, permission, request)
        return who

    def check(self, principal: Principal, permission: str, request: Request) -> None:
        install(self.path.hooks)
        with acting_as(principal):
            self.path.principal(request, permission)

    def holds(self, principal: Principal, permission: str) -> bool:
        try:
            self.path.hooks.authz.check(principal, permission)
        except ApiError:
            return False
        return True

    # ------------------------------------------------------------------ pages
    def lang(self, request: Request, who: Who | None) -> str:
        chosen = request.cookies.get(LANG_COOKIE) or (who.session.lang if who else None)
        return i18n.pick(chosen, self.settings.language)

    def page(self, request: Request, template: str, who: Who | None, status: int = 200, **values) -> HTMLResponse:
        lang = self.lang(request, who)
        nav = [] if who is None else [(url, key) for perm, url, key in NAV if self.holds(who.principal, perm)]
        html = self.env.get_template(template).render(
            t=i18n.translator(lang), lang=lang, who=who, nav=nav, here=request.url.path,
            csrf=who.session.csrf if who else "", js_strings=i18n.js_strings(lang), **values)
        return HTMLResponse(html, status_code=status)


def _when(epoch) -> str:
    """Epoch seconds as 'YYYY-MM-DD HH:MM UTC' (a session's start in the conversation list)."""
    from datetime import datetime, timezone

    if not isinstance(epoch, int | float):
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
