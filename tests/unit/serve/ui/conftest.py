"""Console app fixtures: the real create_app over a scripted engine, with fake or no backends."""

from __future__ import annotations

import pytest
from console_ui_helpers import make_app

from fixtures.console_fakes import (
    FakeAudit,
    FakeExperiments,
    FakeKB,
    FakeKeys,
    FakeReview,
    FakeSessions,
    KeyAuth,
    write_run,
)


@pytest.fixture
def run_folder(tmp_path):
    write_run(tmp_path / "runs")
    return tmp_path / "runs"


@pytest.fixture
def governed(run_folder):
    """An app whose hooks.auth takes FakeKeys keys, every fake backend on app.state, one admin key."""
    from fastapi.testclient import TestClient

    from domaintune.serve.hooks import Hooks

    keys, audit = FakeKeys(), FakeAudit()
    app = make_app(hooks=Hooks(auth=KeyAuth(keys), audit=audit), runs_dir=run_folder,
                   backends={"keys": keys, "audit": audit, "sessions": FakeSessions(),
                             "review": FakeReview([{"id": "r1", "text": "held answer", "reason": "rule: pii"}]),
                             "experiments": FakeExperiments(), "kb": FakeKB()})
    _, admin_secret = keys.create("root", "admin")
    _, user_secret = keys.create("alice", "user")
    with TestClient(app) as client:
        yield client, {"admin": admin_secret, "user": user_secret, "keys": keys, "audit": audit, "app": app}
