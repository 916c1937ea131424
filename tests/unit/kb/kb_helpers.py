"""Helpers of the knowledge-base tests: a fake data-stage output, a deterministic embedder, a spy
engine that records every prompt it is given, and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import yaml

from domaintune.serve.engine.base import EngineStats, Event, Stream
from fixtures.loopback import LoopbackServer


def count_tokens(text: str) -> int:
    """A stand-in for a tokenizer: one token per word and per CJK character."""
    return len(re.findall(r"[\u4e00-\u9fff]|[^\s\u4e00-\u9fff]+", text))


class HashEmbedder:
    """Bag of hashed words -> a normalized vector: similar words, similar vectors; no model needed."""

    def __init__(self, dim: int = 64, model_id: str = "hash-bow", weights_hash: str = "0" * 64):
        self.dim, self.model_id, self.weights_hash = dim, model_id, weights_hash
        self.embedded = 0

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in re.findall(r"\w", text.lower()) if re.search(r"[\u4e00-\u9fff]", text) else text.lower().split():
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def passages(self, texts):
        self.embedded += len(texts)
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def query(self, text):
        return self._one(text)


def write_run(root: Path, docs: list[dict], *, stream: str = "docs", kb: dict | None = None) -> Path:
    """A run folder whose data stage 'finished' with `docs` (all in train), and a config naming it."""
    run = root / "runs" / "t"
    out = run / "data"
    (out / stream).mkdir(parents=True, exist_ok=True)
    with open(out / stream / "train.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"id": d["id"], "text": d["text"], "stream": stream, "meta": d.get("meta", {})},
                                ensure_ascii=False) + "\n")
    for split in ("val", "test"):
        (out / stream / f"{split}.jsonl").write_text("", encoding="utf-8")
    streams = {stream: {s: f"{stream}/{s}.jsonl" for s in ("train", "val", "test")}}
    (out / "streams.json").write_text(json.dumps(streams), encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps({"stage": "data", "outputs": {"streams": "streams.json"}}))
    config = root / "domaintune.yaml"
    section = kb if kb is not None else {"sources": [{"stream": stream, "acl": ["public"]}]}
    config.write_text(yaml.safe_dump({"name": "t", "runs_dir": "runs", "model": {"base": "unused/tiny"},
                                      "kb": section}), encoding="utf-8")
    return config


def load(config: Path):
    from domaintune.config import load_config

    return load_config(config, [])


class SpyEngine:
    """An engine that records the decoded prompt of every request and answers with fixed text."""

    model_name = "spy"
    context_length = 1_000_000

    def __init__(self, tokenizer, answer: str = "It is $35 [1]. See also [2] and [99]."):
        self.tokenizer, self.answer = tokenizer, answer
        self.prompts: list[str] = []

    def start(self):
        pass

    def stop(self):
        pass

    def ready(self):
        return True

    def stats(self):
        return EngineStats()

    def submit(self, request) -> Stream:
        self.prompts.append(self.tokenizer.decode(request.prompt_ids))
        stream = Stream(request.request_id, asyncio.get_running_loop(), lambda _id: None)
        pieces = re.findall(r".{1,5}", self.answer, flags=re.S)  # split markers across events
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            stream.put(Event(piece, "stop" if last else None, len(request.prompt_ids), i + 1))
        return stream


class ThreadServer(LoopbackServer):
    """The loopback server, with an openai client for a given key."""

    def client(self, key: str = "unused"):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30)

