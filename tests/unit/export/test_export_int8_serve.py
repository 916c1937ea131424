"""`serve.weights: int8`: `domaintune serve CFG` serves the run's INT8 export (export.quantize: int8)
through the real server process; a run without that export is refused naming the key and the fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from domaintune.errors import ConfigError, ModelError
from domaintune.serve.command import load_with_settings, run_model


def _config(tmp_path: Path, tiny_model_dir: Path, serve: str) -> Path:
    path = tmp_path / "domaintune.yaml"
    path.write_text(f"name: demo\nruns_dir: runs\nmodel:\n  base: {tiny_model_dir}\nexport:\n  quantize: int8\n"
                    f"serve:\n{serve}", encoding="utf-8")
    return path


def _int8_export(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """runs/demo/export as the export stage leaves it with export.quantize: int8."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune import quantized

    export = tmp_path / "runs" / "demo" / "export"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    quantized.save_int8(model, AutoTokenizer.from_pretrained(tiny_model_dir), quantized.quantize_int8(model),
                        export / "int8")
    (export / "manifest.json").write_text(json.dumps({"outputs": {"model": "model", "int8": "int8"}}))
    return export / "int8"


def test_serve_cfg_picks_the_int8_export_when_the_config_asks(tmp_path, tiny_model_dir):
    folder = _int8_export(tmp_path, tiny_model_dir)
    cfg, _ = load_with_settings(_config(tmp_path, tiny_model_dir, "  weights: int8\n"), [])
    assert run_model(cfg)[0] == folder
    cfg, _ = load_with_settings(_config(tmp_path, tiny_model_dir, "  weights: full\n"), [])
    assert run_model(cfg)[0] == tmp_path / "runs" / "demo" / "export" / "model"


def test_a_run_without_the_int8_export_is_refused_naming_the_key_and_the_fix(tmp_path, tiny_model_dir):
    cfg, _ = load_with_settings(_config(tmp_path, tiny_model_dir, "  weights: int8\n"), [])
    with pytest.raises(ModelError, match=r"serve.weights: int8 .*export stage has not run.*export.quantize: int8"):
        run_model(cfg)
    export = tmp_path / "runs" / "demo" / "export"
    export.mkdir(parents=True)
    (export / "manifest.json").write_text(json.dumps({"outputs": {"model": "model"}}))
    with pytest.raises(ModelError, match="wrote no INT8 folder.*or set serve.weights: full"):
        run_model(cfg)
    with pytest.raises(ConfigError, match="weights: int8 .*engine: cpu"):
        load_with_settings(_config(tmp_path, tiny_model_dir, "  weights: int8\n  engine: vllm\n"), [])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_domaintune_serve_cfg_answers_from_the_int8_model(tmp_path, tiny_model_dir):
    import torch

    from domaintune.serve.loading import load_for_serving

    folder = _int8_export(tmp_path, tiny_model_dir)
    port = _free_port()
    cfg = _config(tmp_path, tiny_model_dir, f"  weights: int8\n  port: {port}\n  threads: 1\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "domaintune", "serve", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.3)
        out = _get(f"http://127.0.0.1:{port}/v1/chat/completions",
                   {"model": "demo", "messages": [{"role": "user", "content": "fee?"}], "max_tokens": 4,
                    "temperature": 0})
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0]
    assert f"serving{folder}" in "".join(log.split())  # the INT8 folder, not export/model (rich wraps lines)
    model, tok = load_for_serving(folder)  # the same weights in-process: the server's greedy reply
    ids = tok.apply_chat_template([{"role": "user", "content": "fee?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
    assert out["choices"][0]["message"]["content"] == tok.decode(want, skip_special_tokens=True)
