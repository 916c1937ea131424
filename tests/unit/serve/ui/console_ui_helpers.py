"""Helpers of the console tests: the real create_app over a scripted engine, and logging in."""

from __future__ import annotations

import re

from fixtures.console_fakes import ScriptedEngine, scripted_renderer

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
LOGIN_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def make_app(answer="Hello **world**", hooks=None, backends=None, runs_dir=None, users=()):
    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app

    settings = ServeConfig(console={"runs_dir": str(runs_dir) if runs_dir else None, "users": list(users)})
    app = create_app(ScriptedEngine(answer), scripted_renderer, settings, hooks)
    for name, backend in (backends or {}).items():
        setattr(app.state, name, backend)
    return app


def login_open(client, next_url="/ui/"):
    page = client.get("/ui/login")
    token = LOGIN_CSRF.search(page.text).group(1)
    return client.post("/ui/login", data={"csrf": token, "method": "open", "next": next_url}, follow_redirects=False)


def login_key(client, secret):
    page = client.get("/ui/login")
    token = LOGIN_CSRF.search(page.text).group(1)
    return client.post("/ui/login", data={"csrf": token, "method": "key", "api_key": secret, "next": "/ui/"},
                       follow_redirects=False)


def csrf_of(page_text: str) -> str:
    return CSRF_META.search(page_text).group(1)


