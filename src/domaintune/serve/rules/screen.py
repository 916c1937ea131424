"""What the rules decided for one request: the prompt to run, or a fixed answer, and the answer filter.

The default Screen passes everything through; serve/rules/engine.py builds the ruled one."""

from __future__ import annotations

from collections.abc import AsyncIterator

from domaintune.serve.engine.base import Event


class FixedStream:
    """A 'sequence' that yields one given text without the engine (refusals and fixed answers)."""

    def __init__(self, text: str, reason: str, prompt_tokens: int):
        self.text, self.reason, self.prompt_tokens = text, reason, prompt_tokens

    def __aiter__(self):
        return self._events()

    async def _events(self):
        yield Event(self.text, self.reason, self.prompt_tokens, 0)

    def cancel(self) -> None:
        pass


class Screen:
    def __init__(self, prompt, fixed: tuple[str, str] | None = None):
        self.prompt, self.fixed = prompt, fixed

    def streams(self, n: int, prompt_tokens: int) -> list | None:
        """The fixed answer's n streams, or None to run the engine."""
        if self.fixed is None:
            return None
        return [FixedStream(self.fixed[0], self.fixed[1], prompt_tokens) for _ in range(n)]

    async def filter(self, events: AsyncIterator, run) -> AsyncIterator:
        async for item in events:
            yield item
