"""Deny by default, proven on the real app (vllm#58144 lesson: prefix-guarded auth missed routes).

Every route in `app.routes` — including routes other engineers add later — is called three ways:
without a key (401 unless permissions.LIVENESS), with each role lacking the route's permission (403)
and with each role holding it (neither 401 nor 403, never 5xx). The route's permission is observed,
not listed: a recording authorizer sees which permission the handler checks, so a route that checks
none fails here."""

from __future__ import annotations

import re

import httpx
import pytest
from access_helpers import bearer, governed
from starlette.routing import Mount, WebSocketRoute

from domaintune.serve.permissions import ALL_PERMISSIONS, LIVENESS, ROLES
from domaintune.serve.ui import PREFIX_PATH as UI
from domaintune.serve.ui import ui_paths


class RecordingAuthz:
    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def check(self, principal, permission):
        self.seen.append(permission)
        self.inner.check(principal, permission)


def flat_routes(routes):
    """Routes with their full paths, through included routers (FastAPI >= 0.165 keeps them lazy)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from flat_routes(route.effective_candidates())
        elif hasattr(route, "original_route"):
            yield route.original_route, route.path
        else:
            yield route, route.path


def probes(app):
    """(method, concrete path, route template) for every route; path parameters get a dummy value."""
    for route, template in flat_routes(app.routes):
        if isinstance(route, WebSocketRoute):
            raise AssertionError(f"websocket route {route.path}: extend this test to cover websockets")
        if not isinstance(template, str):
            raise AssertionError(f"route {route!r} has no path: extend this test to cover it")
        path = re.sub(r"\{[^}]+\}", "probe-1", template)
        if isinstance(route, Mount):
            yield "GET", path.rstrip("/") + "/", template
            continue
        for method in sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"}):
            yield method, path, template


def _call(client, method, path, token=None):
    headers = bearer(token) if token else {}
    kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.request(method, path, headers=headers, timeout=30, **kwargs)


def route_violations(server, tokens: dict[str, str]) -> list[str]:
    app = server.app
    recorder = RecordingAuthz(app.state.path.hooks.authz)
    app.state.path.hooks.authz = recorder
    problems = []
    with httpx.Client(base_url=server.url) as client:
        for method, path, template in probes(app):
            where = f"{method} {template}"
            if template == UI or template.startswith(UI + "/"):
                # The console authenticates by login session, not by key: its own enumeration test
                # (tests/unit/serve/ui/test_console_security.py) proves every one of ui_paths() needs a login.
                if template not in ui_paths():
                    problems.append(f"{where}: a /ui route missing from serve.ui.ui_paths(), so untested")
                continue
            anonymous = _call(client, method, path)
            if template in LIVENESS:
                if anonymous.status_code in (401, 403) or anonymous.status_code >= 500:
                    problems.append(f"{where}: liveness route answered {anonymous.status_code}")
                continue
            if anonymous.status_code != 401:
                problems.append(f"{where}: without a key answered {anonymous.status_code}, not 401")
            recorder.seen.clear()
            admin = _call(client, method, path, tokens["admin"])
            if not recorder.seen:
                problems.append(f"{where}: declares no permission (never calls path.principal)")
                continue
            needed = recorder.seen[0]
            if needed not in ALL_PERMISSIONS:
                problems.append(f"{where}: checks '{needed}', which is not in permissions.ALL_PERMISSIONS")
            if admin.status_code in (401, 403) or admin.status_code >= 500:
                problems.append(f"{where}: admin answered {admin.status_code}")
            for role, perms in ROLES.items():
                status = _call(client, method, path, tokens[role]).status_code
                if needed not in perms and status != 403:
                    problems.append(f"{where}: role {role} lacks '{needed}' but got {status}, not 403")
                if needed in perms and (status in (401, 403) or status >= 500):
                    problems.append(f"{where}: role {role} holds '{needed}' but got {status}")
    app.state.path.hooks.authz = recorder.inner
    return problems


@pytest.fixture
def full_server(start_server, loaded, tmp_path):
    """The real app with every optional backend this branch has configured."""
    server = start_server(loaded, max_tokens_cap=4, **governed(tmp_path, limits={"requests_per_minute": 10_000}))
    tokens = {role: server.app.state.keys.create(f"probe-{role}", role)[1] for role in ROLES}
    return server, tokens


def test_every_route_denies_by_default_and_enforces_its_permission(full_server):
    server, tokens = full_server
    templates = {t for _, _, t in probes(server.app)}
    assert {"/v1/chat/completions", "/v1/models", "/metrics", "/v1/review/items", "/v1/keys"} <= templates
    assert route_violations(server, tokens) == []


def test_a_route_without_a_permission_check_fails_the_enumeration(full_server):
    server, tokens = full_server

    @server.app.get("/v1/naked")
    async def naked():  # forgot request.app.state.path.principal(request, ...)
        return {"secret": "data"}

    problems = route_violations(server, tokens)
    assert any(p.startswith("GET /v1/naked: without a key answered 200") for p in problems), problems
    assert any(p == "GET /v1/naked: declares no permission (never calls path.principal)" for p in problems)


def test_every_permission_is_withheld_from_some_role():
    """Otherwise the 403 half of the enumeration could not be tested for that permission."""
    for permission in ALL_PERMISSIONS:
        assert any(permission not in perms for perms in ROLES.values()), permission


# --------------------------------------------------------------------------- one audit record per request
def _audit_count(audit) -> int:
    return audit.verify()["records"]


def test_every_route_leaves_exactly_one_audit_record_per_request(start_server, loaded, tmp_path):
    """Each route of the app — enumerated, as above — called without a key, with a role lacking and a role
    holding its permission: each call adds exactly one chained record naming the route template, the
    status it answered and the key id (never the token); liveness and the console's page views are not audited,
    its state-changing POSTs are (with no key id here: the console authenticates by login session, not bearer)."""
    audit_db = tmp_path / "audit.sqlite"
    server = start_server(loaded, max_tokens_cap=4, **governed(
        tmp_path, limits={"requests_per_minute": 10_000}, audit={"enabled": True, "db": str(audit_db)}))
    keys, audit = server.app.state.keys, server.app.state.audit
    made = {role: keys.create(f"probe-{role}", role) for role in ("admin", "auditor")}
    calls = 0
    with httpx.Client(base_url=server.url) as client:
        for method, path, template in probes(server.app):
            console = template == UI or template.startswith(UI + "/")
            skipped = template in LIVENESS or (console and method in ("GET", "HEAD"))
            for role in (None, "auditor", "admin"):
                before = _audit_count(audit)
                answer = _call(client, method, path, made[role][1] if role else None)
                new = [r for r in audit.query(limit=5) if r["seq"] > before]
                where = f"{method} {template} as {role}"
                if skipped:
                    assert new == [], where
                    continue
                calls += 1
                assert len(new) == 1, (where, new)
                record = new[0]
                assert record["status"] == answer.status_code, where
                assert record["route"] == template, where
                assert record["key_id"] == (made[role][0] if role and not console else None), where
        assert _audit_count(audit) == calls
        before = _audit_count(audit)
        assert client.get("/no/such/route").status_code == 404
        assert client.get("/v1/models", headers={"Authorization": "Bearer " + "x" * 5000}).status_code == 401
        limited = keys.create("one-a-minute", "user", limits={"requests_per_minute": 1})
        ask = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert client.post("/v1/chat/completions", json=ask, headers=bearer(limited[1])).status_code == 200
        assert client.post("/v1/chat/completions", json=ask, headers=bearer(limited[1])).status_code == 429
    rows = list(reversed([r for r in audit.query(limit=10) if r["seq"] > before]))
    assert [(r["route"], r["status"], r["key_id"]) for r in rows] == [
        ("<no route>", 404, None), ("/v1/models", 401, None),
        ("/v1/chat/completions", 200, limited[0]), ("/v1/chat/completions", 429, limited[0])]
    assert audit.verify()["ok"]
    tokens = [t for _, t in made.values()] + [limited[1]]
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("audit.sqlite"))
    assert not any(t.encode() in stored or t.split(".")[1].encode() in stored for t in tokens)
