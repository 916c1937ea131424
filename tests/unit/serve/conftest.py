"""Fixtures for the serving tests (helpers in serve_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import ThreadServer, build_varied_model_dir


@pytest.fixture(scope="session")
def varied_model_dir(tmp_path_factory) -> Path:
    return build_varied_model_dir(tmp_path_factory.mktemp("varied-model"))


@pytest.fixture(scope="session")
def loaded(varied_model_dir):
    from domaintune.serve.loading import load_for_serving

    return load_for_serving(varied_model_dir)


@pytest.fixture
def start_server():
    """start_server((model, tokenizer), model_wrapper=None, hooks=None, **serve_settings) -> ThreadServer,
    on a free loopback port; every server started is stopped at the end of the test."""
    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.render import ChatRenderer

    started = []

    def start(model_and_tokenizer, model_wrapper=None, hooks=None, **overrides):
        model, tokenizer = model_and_tokenizer
        settings = ServeConfig(port=0, **overrides)
        limits = SchedulerLimits(settings.max_running, settings.max_waiting, settings.prefill_chunk_tokens, 1)
        engine = HFEngine(model_wrapper or model, tokenizer, "tiny", limits)
        server = ThreadServer(create_app(engine, ChatRenderer(tokenizer), settings, hooks), settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
