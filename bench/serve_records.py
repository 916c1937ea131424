"""Latency the governance layers add per request: bare serving core vs audit (encrypted content, one fsync per
record) + sessions, a response-cache hit, and every layer on at once (API key + role check, rate limits,
rules + review queue, audit, sessions, cache), over HTTP with the official openai client, in one run.

A tiny random Llama (2 layers, hidden 64) generates 1 token, so the model's own time is small and the
difference is the layers' cost (encryption, SQLite commits, session history). Prints median and p95 per
variant and the ratio to the bare core; the load average is printed because this machine is shared.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/serve_records.py --requests 150
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    from fixtures.tiny_model import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg).eval(), tok


def start(model, tok, overrides: dict):
    import uvicorn

    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.render import ChatRenderer
    from domaintune.serve.server import uvicorn_config

    settings = ServeConfig(port=0, **overrides)
    engine = HFEngine(model, tok, "tiny", SchedulerLimits(8, 32, 512, 1))
    config = uvicorn_config(create_app(engine, ChatRenderer(tok), settings), settings)
    config.log_level = "warning"
    server = uvicorn.Server(config)
    server.app_state = config.app.state
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return server, f"http://{host}:{port}/v1"


def measure(url: str, n: int, session: bool, temperature: float, key: str = "unused") -> list[float]:
    import openai

    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    extra = {"session_id": "new"} if session else None
    times = []
    for i in range(n + 5):
        t0 = time.perf_counter()
        out = client.chat.completions.create(model="tiny", max_tokens=1, temperature=temperature,
                                             messages=[{"role": "user", "content": f"question {i % 3} about refunds"}],
                                             extra_body=extra)
        if session and extra["session_id"] == "new":
            extra = {"session_id": out.model_extra["session_id"]}
        if i >= 5:  # warm-up excluded
            times.append((time.perf_counter() - t0) * 1000)
    return times


def records(root: Path, **on) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    ring = root / "keyring"
    ring.write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n")
    return {"encryption": {"keyring_file": str(ring), "user_keys_db": str(root / "k.sqlite")},
            "audit": {"enabled": on.get("audit", False), "db": str(root / "a.sqlite"), "content": "encrypted"},
            "sessions": {"enabled": on.get("sessions", False), "db": str(root / "s.sqlite"), "context_tokens": 200},
            "cache": {"enabled": on.get("cache", False), "db": str(root / "c.sqlite")}}


RULES = """rules:
  - {name: no-weapons, keywords: [explosive], action: refuse, message: I cannot help with that.}
  - {name: formal, keywords: [refunds], action: instruct, message: Answer formally.}
  - {name: pii-out, stage: output, pii: [EMAIL], action: review, review: deliver}
"""


def governed(root: Path, sessions: bool) -> dict:
    """Every governance layer: keys (auth + role), limits, rules + review, audit, sessions, cache."""
    out = records(root, audit=True, sessions=sessions, cache=True)
    (root / "rules.yaml").write_text(RULES, encoding="utf-8")
    out.update({"auth": {"db": str(root / "keys.sqlite"), "secret_file": str(root / "server.secret")},
                "limits": {"requests_per_minute": 100_000, "tokens_per_minute": 10_000_000, "concurrent": 8},
                "rules": {"file": str(root / "rules.yaml"), "review_db": str(root / "review.sqlite")}})
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tok = tiny_model()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        variants = [("bare core", {}, False, 0.0),
                    ("audit (encrypted content)", records(root / "a", audit=True), False, 1.0),
                    ("audit + session (growing history)", records(root / "b", audit=True, sessions=True), True, 1.0),
                    ("audit + cache hit (temperature 0)", records(root / "c", audit=True, cache=True), False, 0.0),
                    ("all layers (key, limits, rules, audit, cache)", governed(root / "d", False), False, 1.0),
                    ("all layers + session", governed(root / "e", True), True, 1.0)]
        results = {}
        for name, overrides, session, temperature in variants:
            server, url = start(model, tok, overrides)
            keys = server.app_state.keys
            key = keys.create("bench", "user")[1] if keys is not None else "unused"
            results[name] = measure(url, args.requests, session, temperature, key)
            server.should_exit = True
            time.sleep(0.5)
    base = statistics.median(results["bare core"])
    base95 = pct(results["bare core"], 0.95)
    print(f"{'variant':46s} {'median ms':>10s} {'p95 ms':>8s} {'median/bare':>12s} {'added median/p95 ms':>20s}")
    for name, times in results.items():
        med, p95 = statistics.median(times), pct(times, 0.95)
        print(f"{name:46s} {med:10.2f} {p95:8.2f} {med / base:12.2f} {med - base:+10.2f} / {p95 - base95:+.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
