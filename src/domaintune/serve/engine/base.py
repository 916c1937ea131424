"""What every engine takes and gives: a GenRequest in, a stream of Events out.

The request path (auth, caps, template, retrieval, audit) runs before and after an engine and
never depends on which engine it is; an engine only turns prompt token ids into text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class GenRequest:
    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    tenant: str = "default"  # who the request is for: engines that share state across requests key it by this
    # Constrained decoding: the output must be one JSON value valid against this schema (a forced tool call);
    # the sequence ends when the value is complete. Every engine honours it (cpu: engine/constrained.py,
    # vllm: structured outputs), so the tool loop can rely on it.
    json_schema: dict | None = None


@dataclass
class Event:
    """A piece of generated text; the last event of a sequence carries finish_reason and the counts."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class EngineFailed(Exception):
    """The engine could not finish a sequence (a model error): reported to the client, never hidden."""


class QueueFull(Exception):
    """No slot and no room in the waiting queue: the caller answers 503 with Retry-After at once."""


@dataclass
class EngineStats:
    running: int = 0
    waiting: int = 0
    peak_running: int = 0  # the largest decode batch seen since start (tests and the bench read it)
    peak_prefill: int = 0  # the most prompts prefilled in one forward
    steps: int = 0
    prefix_hit_tokens: int = 0     # prompt tokens whose KV came from the prefix cache
    prefix_lookup_tokens: int = 0  # prompt tokens of every request looked up there


class Stream:
    """The events of one sequence, delivered from the engine's thread onto the caller's event loop."""

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop, on_cancel):
        self.request_id = request_id
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._on_cancel = on_cancel
        self._done = False

    def put(self, item: Event | Exception) -> None:
        """Thread-safe: called by the engine thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed (server shut down): nobody is listening any more
            self._done = True

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, Exception):
                    self._done = True
                    raise item
                yield item
                if item.finish_reason is not None:
                    self._done = True
                    return
        finally:
            if not self._done:  # the consumer went away (client disconnect, error): free the slot
                self.cancel()

    def cancel(self) -> None:
        self._done = True
        self._on_cancel(self.request_id)


class Engine(Protocol):
    model_name: str
    context_length: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def ready(self) -> bool: ...

    def submit(self, request: GenRequest) -> Stream:
        """Queue a request; raises QueueFull at once when there is no room. Must be called on the event loop."""
        ...

    def stats(self) -> EngineStats: ...
