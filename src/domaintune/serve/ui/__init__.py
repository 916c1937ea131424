"""The web console at /ui: chat, run dashboard and admin pages, served by `domaintune serve`.

Server-rendered Jinja2 pages (autoescape on) with small scripts and styles shipped in this
package (static/); nothing is fetched from another site. See docs/console.md.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from domaintune.serve.errors import ApiError


def routers():
    from domaintune.serve.ui import admin, chat, dashboard, login

    return [login.router, chat.router, dashboard.router, admin.router]


def ui_paths() -> set[str]:
    """Every /ui route path (the route-enumeration test reads it)."""
    return {r.path for router in routers() for r in router.routes} | \
        {PREFIX_PATH, PREFIX_PATH + "/api/chat", PREFIX_PATH + "/static"}


PREFIX_PATH = "/ui"


def mount(app, settings) -> None:
    """Add the console to the API app (a no-op when serve.console.enabled is false)."""
    if not settings.console.enabled:
        return
    from domaintune.serve.ui import chat
    from domaintune.serve.ui.core import Console, LoginRequired
    from domaintune.serve.ui.security import PREFIX, SecurityHeaders
    from domaintune.serve.ui.sessions import install

    app.state.console = Console(app, settings.console, secure=settings.tls is not None)
    install(app.state.path.hooks)
    for router in routers():
        app.include_router(router)
    app.router.add_route(PREFIX + "/api/chat", chat.ChatStream(app), methods=["POST"])
    app.mount(PREFIX + "/static", StaticFiles(packages=[("domaintune.serve.ui", "static")]), name="ui-static")
    app.add_middleware(SecurityHeaders)

    @app.get(PREFIX, include_in_schema=False)
    async def _root():
        return RedirectResponse(PREFIX + "/", status_code=307)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _err):
        if request.url.path.startswith(PREFIX + "/api/") or request.method not in ("GET", "HEAD"):
            err = ApiError(401, "log in to the console first", code="login_required")
            from fastapi.responses import JSONResponse

            return JSONResponse(err.body(), status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)
