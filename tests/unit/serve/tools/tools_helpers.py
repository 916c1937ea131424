"""A scripted engine for the tool tests: it reads the rendered prompt and answers what a script says.

`script(prompt_text) -> str` decides the reply from the whole prompt the server rendered, so a test
can write an engine that obeys any instruction it finds there (the prompt-injection test) and can
see exactly what reached the model (a spy). The reply streams in small pieces, as a model's would.
"""

from __future__ import annotations

import asyncio

from domaintune.serve.engine.base import EngineStats, Event, GenRequest, Stream


class ScriptedEngine:
    def __init__(self, tokenizer, script, model_name: str = "tiny", piece: int = 5):
        self.tokenizer, self.script, self.model_name = tokenizer, script, model_name
        self.context_length, self.piece = 4096, piece
        self.prompts: list[str] = []  # every prompt the engine was given, decoded
        self.requests: list[GenRequest] = []
        self._running = False

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False

    def ready(self) -> bool:
        return self._running

    def stats(self) -> EngineStats:
        return EngineStats()

    def submit(self, request: GenRequest) -> Stream:
        stream = Stream(request.request_id, asyncio.get_running_loop(), lambda _rid: None)
        prompt = self.tokenizer.decode(request.prompt_ids)
        self.prompts.append(prompt)
        self.requests.append(request)
        reply = self.script(prompt)
        pieces = [reply[i:i + self.piece] for i in range(0, len(reply), self.piece)] or [""]
        for n, text in enumerate(pieces, 1):
            last = n == len(pieces)
            stream.put(Event(text=text, finish_reason="stop" if last else None, prompt_tokens=len(request.prompt_ids),
                             completion_tokens=n))
        return stream


def last_turn(prompt: str) -> str:
    """The text after the last user/tool turn marker of the tiny ChatML template."""
    return prompt.rsplit("<|im_start|>", 2)[-2] if prompt.count("<|im_start|>") >= 2 else prompt


def slow_tool(seconds: float) -> str:
    """Sleeps (a tool that hangs); used by the timeout test through its import path."""
    import time

    time.sleep(seconds)
    return "woke up"


def whoami(principal) -> dict:
    """Reports the caller the server passed in (a function declaring `principal` receives it)."""
    return {"id": principal.id, "role": principal.role}


def broken_tool() -> str:
    raise RuntimeError("backend down")


EXECUTED: list[dict] = []  # every call delete_records ever received (the injection tests assert it stays empty)


def delete_records(table: str) -> str:
    """A destructive tool an attacker would like the model to call."""
    EXECUTED.append({"table": table})
    return f"deleted {table}"


class FakeKB:
    """Anything with .search(principal, query, k): documents carry ACL groups, filtered by the caller's groups."""

    def __init__(self, docs: list[dict]):
        self.docs = docs
        self.calls: list[tuple[str, str, int]] = []

    def search(self, principal, query: str, k: int) -> list[dict]:
        self.calls.append((principal.id, query, k))
        readable = [d for d in self.docs if set(d["acl"]) & set(principal.groups) or "public" in d["acl"]]
        return [{"document_id": d["id"], "chunk_id": d["id"] + "#0", "title": d["title"], "text": d["text"],
                 "score": 1.0} for d in readable][:k]


def long_tool() -> str:
    """A result long enough to push the next round past serve.max_prompt_tokens."""
    return "lorem ipsum " * 400
