"""The tool loop of one chat request: generate, parse the model's own calls, run server-side ones, repeat.

Per model turn: calls are parsed from what the model just generated (never from tool results or
retrieved text). If the turn calls a client-side tool, those calls go back to the client
(finish_reason "tool_calls", OpenAI semantics) and server-side calls of that turn are skipped.
Otherwise every call is checked against the request's plan and the principal and executed (or
answered with an error), the results are appended as tool messages and the model runs again, up
to `serve.tools.max_rounds` rounds; a model still calling tools after that ends with "length".
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal, Prompt
from domaintune.serve.tools.calls import ParsedCall, StreamParser
from domaintune.serve.tools.plan import ToolPlan
from domaintune.serve.tools.registry import Outcome, ToolRuntime
from domaintune.serve.tools.render import render_ids


@dataclass
class ToolState:
    """Admitted.tools: the plan and what the loop has done so far."""

    plan: ToolPlan
    runtime: ToolRuntime
    principal: Principal
    prompt: Prompt
    prefix: str
    rounds: int = 0
    completion_tokens: int = 0
    outcomes: list[dict] = field(default_factory=list)  # server-side calls, for the response and audit

    def note(self, record, call: ParsedCall, status: str, outcome: Outcome | None = None) -> None:
        record.tools.append(f"{call.name}:{status}")
        if outcome is not None:
            self.outcomes.append({"round": self.rounds, "id": call.id, "name": call.name, "status": status,
                                  "ms": outcome.ms})


@dataclass
class Content:
    text: str


@dataclass
class Calls:
    calls: list[ParsedCall]


@dataclass
class Finish:
    reason: str


def _first_round_forced(state: ToolState) -> bool:
    return state.rounds == 0 and state.plan.choice in ("required", "named")


async def turns(path, run) -> AsyncIterator[Content | Calls | Finish]:
    """What the client sees of the whole loop: content pieces, then client calls or nothing, then a finish."""
    state: ToolState = run.tools
    while True:
        parser = StreamParser(state.prefix if state.rounds == 0 else "")
        reason, tokens = "stop", 0
        async for _index, event in path.events(run):
            piece = parser.feed(event.text)
            if piece:
                yield Content(piece)
            tokens = event.completion_tokens
            reason = event.finish_reason or reason
        state.completion_tokens += tokens
        tail, calls = parser.close()
        if tail:
            yield Content(tail)
        calls = _allowed_shape(state, run.record, calls, reason)
        if not calls:
            yield Finish(reason)
            return
        client = [c for c in calls if c.name in state.plan.client]
        if client:
            for call in calls:
                state.note(run.record, call, "client" if call in client else "skipped")
            yield Calls(client)
            yield Finish("tool_calls")
            return
        if state.rounds >= state.runtime.cfg.max_rounds:
            for call in calls:
                state.note(run.record, call, "rounds_exhausted")
            yield Finish("length")
            return
        await _run_calls(state, run.record, calls, parser.content)
        await _next_round(path, run, state)


def _allowed_shape(state: ToolState, record, calls: list[ParsedCall], reason: str) -> list[ParsedCall]:
    """Apply tool_choice and parallel_tool_calls to the parsed calls of one turn.

    A forced turn is decoded under the call's schema, so it always parses, unless it was cut short:
    by max_tokens (finish_reason "length" with the partial text, as OpenAI answers) or by a stop string (422)."""
    if _first_round_forced(state):
        if state.plan.choice == "named":
            calls = [c for c in calls if c.name == state.plan.forced]
        if not calls and reason != "length":
            raise ApiError(422, f"the reply ended before a complete call although tool_choice was "
                                f"'{state.plan.forced or state.plan.choice}' (a `stop` string inside the call?)",
                           code="invalid_tool_call", param="tool_choice")
    if not state.plan.parallel and len(calls) > 1:
        for call in calls[1:]:
            state.note(record, call, "dropped")  # parallel_tool_calls: false
        calls = calls[:1]
    cap = state.runtime.cfg.max_calls_per_round
    for call in calls[cap:]:
        state.note(record, call, "dropped")
    return calls[:cap]


async def _run_calls(state: ToolState, record, calls: list[ParsedCall], content: str) -> None:
    outcomes = [await state.runtime.execute(c, state.principal, state.plan.server) for c in calls]
    for outcome in outcomes:
        state.note(record, outcome.call, outcome.status, outcome)
    state.rounds += 1
    messages = list(state.prompt.messages)
    messages.append({"role": "assistant", "content": content, "tool_calls": [c.openai() for c in calls]})
    messages.extend({"role": "tool", "tool_call_id": o.call.id, "content": o.content} for o in outcomes)
    state.prompt = dataclasses.replace(state.prompt, messages=messages)  # keeps template id and sources


async def _next_round(path, run, state: ToolState) -> None:
    """Render the grown conversation and submit it, charged to the limiter like a request of its own."""
    later = dataclasses.replace(state.plan, choice="auto", forced=None)  # only the first turn is forced
    ids, _ = render_ids(run.renderer or path.renderer, state.prompt, later)
    max_tokens = path._check_context(run.request, len(ids), "messages", run.engine)
    release = path.hooks.limits.acquire(state.principal, len(ids) + max_tokens)
    previous = run.release

    def release_all(*used) -> None:  # the limiter's release takes the tokens used (serve/security/limits.py)
        release(len(ids) + max_tokens)  # a tool round stays charged in full: its own usage is not counted
        previous(*used)

    run.release = release_all
    run.streams = path._submit(run.request, ids, max_tokens, state.principal,
                               f"{run.record.request_id}-r{state.rounds}", run.engine)
    run.started = time.perf_counter()  # time to first token of this round, not of the request
    run.prompt_tokens += len(ids)
    run.record.prompt_tokens = run.prompt_tokens
