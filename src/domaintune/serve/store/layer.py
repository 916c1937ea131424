"""The records steps of the request path: session history in, cache lookup, then session + cache out.

pipeline.admit calls `begin` before the template step (history joins the request's messages, the
oldest turns dropped to fit the token budget), `lookup` once the final prompt ids are known and
the request is admitted (a hit skips the engine), and the app calls `complete` after a 200.
With neither sessions nor cache configured every step is a pass-through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from domaintune.serve.errors import invalid
from domaintune.serve.hooks import AuditRecord, Principal, Prompt
from domaintune.serve.store.cache import ResponseCache, cache_key
from domaintune.serve.store.sessions import Sessions, subject_of

NEW_SESSION = "new"


@dataclass
class Turn:
    """What the records layer knows about one request between admission and its answer."""

    principal: Principal
    session_id: str | None = None
    new_messages: list[dict] = field(default_factory=list)
    cache_key: str | None = None
    cached: dict | None = None  # {"choices": [[text, reason], ...], "completion_tokens": n} on a hit

    def extras(self) -> dict:
        """Extension fields of the response body (and of the final stream chunk)."""
        return {"session_id": self.session_id} if self.session_id else {}


class RecordsLayer:
    def __init__(self, sessions: Sessions | None = None, cache: ResponseCache | None = None,
                 context_tokens: int | None = None):
        self.sessions, self.cache, self.context_tokens = sessions, cache, context_tokens

    # ------------------------------------------------------------------ before the template step
    def begin(self, principal: Principal, req, prompt: Prompt, record: AuditRecord, renderer,
              context_length: int, max_prompt_tokens: int, tools: bool = False) -> tuple[Prompt, Turn]:
        turn = Turn(principal)
        record.subject = subject_of(principal)
        record.prompt_text = (json.dumps(prompt.messages, ensure_ascii=False) if prompt.messages is not None
                              else prompt.text)
        sid = getattr(req, "session_id", None)
        if sid is None:
            return prompt, turn
        if self.sessions is None:
            raise invalid("this server keeps no sessions (serve.sessions.enabled is false): drop session_id",
                          "session_id", code="sessions_disabled")
        if req.n != 1:
            raise invalid("a session continues one conversation: n must be 1 with session_id", "n")
        if tools:  # the tool loop's intermediate turns are not stored yet: refuse rather than keep half a dialog
            raise invalid("session_id cannot be combined with tools on this server yet", "session_id",
                          code="unsupported_parameter")
        if sid == NEW_SESSION:
            history, turn.session_id = [], self.sessions.create(principal)
        else:
            history, turn.session_id = self.sessions.messages(principal, sid), sid
        record.session_id = turn.session_id
        turn.new_messages = [m for m in prompt.messages if m["role"] != "system"]  # instructions are per request
        budget = self.context_tokens or min(max_prompt_tokens, context_length // 2)
        prompt.messages = fit(history, turn.new_messages, renderer, budget)
        return prompt, turn

    # ------------------------------------------------------------------ before the engine
    def lookup(self, turn: Turn, prompt: Prompt, req, ids: list[int], max_tokens: int, record: AuditRecord,
               model: str) -> None:
        if self.cache is None or req.temperature != 0 or req.stream:
            return
        request = {"ids": ids, "max_tokens": max_tokens, "stop": req.stop_list(), "n": req.n, "top_p": req.top_p,
                   "seed": req.seed, "chat": prompt.messages is not None}
        turn.cache_key = cache_key(turn.principal, prompt, model, record.variant, request)
        turn.cached = self.cache.get(turn.cache_key, turn.principal)
        if turn.cached is not None:
            record.cached = True
            record.completion_tokens = turn.cached["completion_tokens"]
            record.finish_reasons = [r for _, r in turn.cached["choices"] if r]

    # ------------------------------------------------------------------ after a 200
    def complete(self, turn: Turn | None, record: AuditRecord, texts: list[str], reasons: list, tokens: int,
                 extensions: dict | None = None) -> None:
        if turn is None:  # an Admitted built outside admit (e.g. a later tool round): nothing to store
            return
        record.answer_text = texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False)
        if turn.session_id is not None:
            self.sessions.append(turn.principal, turn.session_id,
                                 [*turn.new_messages, {"role": "assistant", "content": texts[0]}])
        if turn.cache_key is not None and turn.cached is None and all(reasons):
            self.cache.put(turn.cache_key, turn.principal,
                           {"choices": [[t, r] for t, r in zip(texts, reasons, strict=True)],
                            "completion_tokens": tokens, "extensions": extensions or {}})


def fit(history: list[dict], new: list[dict], renderer, budget: int) -> list[dict]:
    """The request's system messages, then history, then its other messages, with the oldest history
    dropped until the rendered prompt fits `budget` tokens (the server's tokenizer counts).

    Binary search over the cut (fewer messages never render longer), then the cut moves to the
    next user turn so the kept history starts a turn, as chat templates expect."""
    system = [m for m in new if m["role"] == "system"]
    rest = [m for m in new if m["role"] != "system"]

    def joined(cut: int) -> list[dict]:
        return system + history[cut:] + rest

    if not history or len(renderer(Prompt(messages=joined(0)))) <= budget:
        return joined(0)
    lo, hi = 1, len(history)  # dropping all history is the last resort; the context check judges what is left
    while lo < hi:
        mid = (lo + hi) // 2
        if len(renderer(Prompt(messages=joined(mid)))) <= budget:
            hi = mid
        else:
            lo = mid + 1
    while lo < len(history) and history[lo]["role"] != "user":
        lo += 1
    return joined(lo)
