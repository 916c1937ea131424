"""`domaintune serve` end to end: a real server process on a free loopback port, the official openai client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from fixtures.cli import invoke


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exported_run(tmp_path, model_dir):
    """A config whose run has an export stage that finished (the folder `domaintune serve CFG` serves)."""
    export = tmp_path / "runs" / "demo" / "export"
    export.mkdir(parents=True)
    shutil.copytree(model_dir, export / "model")
    (export / "manifest.json").write_text(json.dumps({"outputs": {"model": "model"}}), encoding="utf-8")
    cfg = tmp_path / "domaintune.yaml"
    cfg.write_text(f"name: demo\nruns_dir: runs\nmodel:\n  base: {model_dir}\n"
                   "serve:\n  threads: 1\n  max_running: 4\n", encoding="utf-8")
    return cfg


def test_public_host_without_tls_is_refused_before_loading_anything(tiny_model_dir):
    result = invoke("serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0", code=2)
    assert "allow_insecure_public" in " ".join(result.output.split())


def test_serve_needs_a_config_or_a_model():
    assert "(--model DIR)" in " ".join(invoke("serve", code=2).output.split())  # rich wraps long lines


@pytest.mark.slow
def test_serve_cfg_answers_the_openai_client_streamed_and_not(tmp_path, tiny_model_dir):
    cfg, port = _exported_run(tmp_path, tiny_model_dir), _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "domaintune", "serve", str(cfg), f"serve.port={port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 120 s"
            time.sleep(0.5)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["demo"]
        messages = [{"role": "user", "content": "What is the wire transfer fee?"}]
        reply = client.chat.completions.create(model="demo", messages=messages, max_tokens=8, temperature=0)
        chunks = list(client.chat.completions.create(model="demo", messages=messages, max_tokens=8, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == reply.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
