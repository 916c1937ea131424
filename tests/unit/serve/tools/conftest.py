"""Fixtures of the tool tests: a real uvicorn server on loopback over a scripted engine."""

from __future__ import annotations

import pytest
from serve_helpers import ThreadServer
from tools_helpers import ScriptedEngine


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from fixtures.tiny_model import build_tokenizer

    return build_tokenizer()


class RecordingAuditor:
    def __init__(self):
        self.records = []

    def record(self, record) -> None:
        self.records.append(record)


class FixedPrincipal:
    """Every request is `principal` (what governance's key lookup would return)."""

    def __init__(self, principal):
        self.principal = principal

    def authenticate(self, headers):
        return self.principal


@pytest.fixture
def tool_server(tiny_tokenizer):
    """tool_server(script, principal=None, tools=None, kb=None, retrieval=None, **serve) -> ThreadServer with
    .engine and .audit (a RecordingAuditor); every server is stopped at the end of the test."""
    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app
    from domaintune.serve.hooks import Hooks
    from domaintune.serve.render import ChatRenderer

    started = []

    def start(script, principal=None, tools=None, kb=None, retrieval=None, **overrides):
        settings = ServeConfig(port=0, tools=tools or {}, **overrides)
        audit = RecordingAuditor()
        hooks = Hooks(audit=audit)
        if retrieval is not None:
            hooks.retrieval = retrieval
        if principal is not None:
            hooks.auth = FixedPrincipal(principal)
        engine = ScriptedEngine(tiny_tokenizer, script)
        app = _app(create_app, engine, ChatRenderer(tiny_tokenizer), settings, hooks, kb)
        server = ThreadServer(app, settings)
        server.audit = audit
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _app(create_app, engine, renderer, settings, hooks, kb):
    """create_app, with a knowledge base bound the way the kb layer binds it (app.state.kb)."""
    if kb is None:
        return create_app(engine, renderer, settings, hooks)
    from domaintune.serve.tools import build_runtime

    no_kb_tools = settings.model_copy(update={"tools": settings.tools.model_copy(update={"server": []})})
    app = create_app(engine, renderer, no_kb_tools, hooks)
    app.state.kb = kb
    app.state.path.tools = app.state.tools = build_runtime(settings.tools, kb=kb)
    return app
