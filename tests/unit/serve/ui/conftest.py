"""Console app fixtures: the real create_app over a scripted engine with the real backends
(fixtures.console_server: keys, audit chain, sessions, review queue, an experiment, a knowledge base)."""

from __future__ import annotations

import pytest

from fixtures.console_fakes import write_run
from fixtures.console_server import build_kb, governed_app


@pytest.fixture
def run_folder(tmp_path):
    write_run(tmp_path / "runs")
    return tmp_path / "runs"


@pytest.fixture
def governed(tmp_path, run_folder):
    """A TestClient on a governed app, and {admin, user: secrets, keys, audit, app, g: Governed}."""
    from fastapi.testclient import TestClient

    g = governed_app(tmp_path / "state", runs_dir=run_folder, kb=build_kb(tmp_path / "kb"))
    with TestClient(g.app) as client:
        yield client, {"admin": g.admin, "user": g.user, "keys": g.state.keys, "audit": g.state.audit,
                       "app": g.app, "g": g}
