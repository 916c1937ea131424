"""The console's guarantees over HTTP: login on every route, CSRF on every change, CSP and friends."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fixtures.console_server import csrf_of, governed_app, login_key, login_open, make_app

PAGES = ["/ui/", "/ui/chat", "/ui/runs", "/ui/runs/demo", "/ui/runs/demo/image?path=train/loss_curves.png",
         "/ui/admin/keys", "/ui/admin/audit", "/ui/admin/review", "/ui/admin/experiments", "/ui/admin/kb",
         "/ui/api/sessions/x"]
POSTS = ["/ui/api/chat", "/ui/api/feedback", "/ui/api/sessions", "/ui/admin/keys", "/ui/admin/keys/k/revoke",
         "/ui/admin/audit/verify", "/ui/admin/review/r1", "/ui/admin/kb/handbook/reindex", "/ui/logout"]
PUBLIC = {"/ui", "/ui/login", "/ui/lang/{lang}", "/ui/static"}


def test_every_ui_route_needs_a_login(governed):
    client, _ = governed
    from domaintune.serve.ui import ui_paths

    routes = ui_paths()
    assert "/ui/admin/keys/{key_id}/revoke" in routes and "/ui/chat" in routes
    listed = {p.split("?")[0] for p in PAGES + POSTS} | PUBLIC
    unlisted = {r for r in routes if not any(_matches(r, p) for p in listed)}
    assert not unlisted, f"new /ui routes must be added to this test: {unlisted}"
    for url in PAGES:
        response = client.get(url, follow_redirects=False)
        assert response.status_code in (303, 401), url
        if response.status_code == 303:
            assert response.headers["location"].startswith("/ui/login?next=")
    for url in POSTS:
        assert client.post(url, json={}, follow_redirects=False).status_code == 401, url


def _matches(route: str, url: str) -> bool:
    import re

    return re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", route), url) is not None or route == url


def test_static_assets_and_login_page_are_public(governed):
    client, _ = governed
    assert client.get("/ui/login").status_code == 200
    js = client.get("/ui/static/chat.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]


def test_security_headers_on_every_console_response(governed):
    client, secrets = governed
    for response in (client.get("/ui/login"), client.get("/ui/static/console.css"),
                     client.get("/ui/chat", follow_redirects=False)):
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in client.get("/health").headers  # the API is not the console
    page = client.get("/ui/login").text
    assert "<script>" not in page and " on" + "click=" not in page and "style=" not in page


def test_session_cookie_is_httponly_strict(governed):
    client, secrets = governed
    response = login_key(client, secrets["admin"])
    assert response.status_code == 303
    cookie = [c for c in response.headers.get_list("set-cookie") if c.startswith("dt_ui=")][0].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert "secure" not in cookie  # no TLS in this test: a Secure cookie would never come back


def test_login_refuses_bad_key_and_missing_login_csrf(governed):
    client, secrets = governed
    assert login_key(client, "dt-wrong").headers["location"].startswith("/ui/login?error=1")
    client.get("/ui/login")
    refused = client.post("/ui/login", data={"method": "key", "api_key": secrets["admin"]}, follow_redirects=False)
    assert refused.status_code == 403
    assert client.get("/ui/chat", follow_redirects=False).status_code == 303


def test_forms_and_fetches_without_csrf_are_refused(governed):
    client, secrets = governed
    login_key(client, secrets["admin"])
    page = client.get("/ui/admin/keys")
    token = csrf_of(page.text)
    assert client.post("/ui/admin/keys", data={"name": "x", "role": "user"}).status_code == 403
    assert client.post("/ui/admin/keys", data={"name": "x", "role": "user", "csrf": "forged"}).status_code == 403
    assert len(secrets["keys"].list()) == 2
    assert client.post("/ui/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 403
    assert client.post("/ui/api/sessions", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/ui/admin/audit/verify", data={}).status_code == 403
    made = client.post("/ui/admin/keys", data={"name": "x", "role": "user", "csrf": token})
    assert made.status_code == 200 and len(secrets["keys"].list()) == 3


def test_role_decides_pages_and_revoked_key_logs_out(governed):
    client, secrets = governed
    login_key(client, secrets["user"])
    assert client.get("/ui/chat").status_code == 200
    assert client.get("/ui/admin/keys").status_code == 403
    assert client.get("/ui/runs").status_code == 403
    nav = client.get("/ui/chat").text
    assert 'href="/ui/chat"' in nav and 'href="/ui/admin/keys"' not in nav
    secrets["keys"].revoke(secrets["g"].key_named("alice")["key_id"])
    assert client.get("/ui/chat", follow_redirects=False).status_code == 303


def test_open_access_login_and_api_unchanged():
    app = make_app()
    with TestClient(app) as client:
        page = client.get("/ui/login")
        assert "login-open" in page.text
        assert login_open(client).status_code == 303
        assert client.get("/ui/admin/keys").status_code == 200
        assert "not-configured" in client.get("/ui/admin/keys").text
        assert "not-configured" in client.get("/ui/admin/audit").text
        assert client.get("/v1/models").status_code == 200


def test_password_login_with_argon2(tmp_path):
    from domaintune.serve.ui.passwords import hash_password

    users = [{"name": "bob", "password_hash": hash_password("s3cret-pass"), "role": "engineer"}]
    app = governed_app(tmp_path / "state", runs_dir=tmp_path, users=users).app  # API keys on: no open login
    with TestClient(app) as client:
        page = client.get("/ui/login")
        assert "login-open" not in page.text and "login-password" in page.text
        token = page.text.split('name="csrf" value="')[1].split('"')[0]
        bad = client.post("/ui/login", data={"csrf": token, "method": "password", "username": "bob",
                                             "password": "nope"}, follow_redirects=False)
        assert bad.headers["location"].startswith("/ui/login?error=1")
        token = client.get("/ui/login").text.split('name="csrf" value="')[1].split('"')[0]
        good = client.post("/ui/login", data={"csrf": token, "method": "password", "username": "bob",
                                              "password": "s3cret-pass"}, follow_redirects=False)
        assert good.status_code == 303
        assert client.get("/ui/runs").status_code == 200  # engineer: the dashboard
        assert client.get("/ui/admin/keys").status_code == 403


def test_plain_text_password_hash_is_a_config_error():
    from pydantic import ValidationError

    from domaintune.config.serve import ServeConfig

    with pytest.raises(ValidationError, match="argon2"):
        ServeConfig(console={"users": [{"name": "bob", "password_hash": "hunter2"}]})


def test_open_redirect_refused(governed):
    client, secrets = governed
    page = client.get("/ui/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    response = client.post("/ui/login", data={"csrf": token, "method": "key", "api_key": secrets["admin"],
                                              "next": "//evil.example/"}, follow_redirects=False)
    assert response.headers["location"] == "/ui/"


def test_hash_password_command_and_runs_dir_default(tmp_path):
    from pathlib import Path

    from typer.testing import CliRunner

    from domaintune.cli import app
    from domaintune.serve.command import load_with_settings
    from domaintune.serve.ui.passwords import verify

    out = CliRunner().invoke(app, ["hash-password"], input="long-enough-pw\nlong-enough-pw\n")
    assert out.exit_code == 0, out.output
    assert verify(out.output.strip().splitlines()[-1], "long-enough-pw")
    cfg, settings = load_with_settings(Path(__file__).resolve().parents[4] / "examples/quickstart/domaintune.yaml", [])
    assert Path(settings.console.runs_dir) == Path(cfg.runs_dir)
