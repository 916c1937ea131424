"""SIGKILL of a real `domaintune serve` process mid-request leaves an audit chain that verifies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from store_helpers import write_keyring
from typer.testing import CliRunner

from domaintune.cli import app as cli

SRC = Path(__file__).resolve().parents[4] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path: Path, model_dir: Path, port: int) -> subprocess.Popen:
    write_keyring(tmp_path / "keyring", "k1")
    cfg = tmp_path / "domaintune.yaml"
    cfg.write_text(f"name: killed\nmodel:\n  base: {model_dir}\nserve:\n  port: {port}\n  model_name: tiny\n"
                   "  threads: 1\n  encryption:\n    keyring_file: keyring\n"
                   "  audit:\n    enabled: true\n    db: records/audit.sqlite\n    content: encrypted\n",
                   encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "domaintune", "serve", str(cfg), "--model", str(model_dir)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not become ready")


@pytest.mark.slow
def test_sigkill_during_requests_leaves_a_chain_that_verifies(tmp_path, varied_model_dir):
    port = _free_port()
    proc = _start(tmp_path, varied_model_dir, port)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30)
    try:
        for i in range(3):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=2)
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="tiny", prompt="x", max_tokens=0)
        finished = []

        def hammer():  # requests finishing (and appending) while the kill lands
            for _ in range(20):
                try:
                    client.completions.create(model="tiny", prompt="load", max_tokens=1)
                    finished.append(1)
                except openai.APIError:
                    return

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "long"}],
                                                max_tokens=200, stream=True)
        next(iter(stream))  # the streamed request is admitted and running
        for t in threads:
            t.start()
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for t in threads:
            t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = tmp_path / "records" / "audit.sqlite"
    run = CliRunner().invoke(cli, ["audit", "verify", "--db", str(db), "--keyring", str(tmp_path / "keyring")])
    assert run.exit_code == 0, run.output
    count = int(run.output.split("ok: ")[1].split()[0])
    assert 4 + len(finished) <= count <= 4 + len(finished) + 4  # at most the in-flight ones may also have landed
    again = CliRunner().invoke(cli, ["audit", "verify", str(tmp_path / "domaintune.yaml")])
    assert again.exit_code == 0 and f"ok: {count} records" in again.output
