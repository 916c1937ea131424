"""OpenAI request models and response/chunk builders (the wire format, nothing else).

Unknown request fields are refused with a 400 naming the field, as OpenAI's own API does
("Unrecognized request argument"), because a silently ignored parameter is a setting that is
accepted and ignored. OpenAI fields this server does not implement are refused the same way,
except at their no-op value (e.g. `presence_penalty: 0`), which clients send by default.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domaintune.serve.errors import ApiError, invalid

# OpenAI parameters we do not implement, with the value that means "off" (accepted, as it changes nothing).
NOOP_VALUES: dict[str, Any] = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False,
                               "top_logprobs": 0, "logit_bias": {}, "parallel_tool_calls": True,
                               "echo": False, "best_of": 1, "suffix": None, "tools": [], "tool_choice": "none",
                               "response_format": {"type": "text"}, "store": False, "metadata": {}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Sampling(_Strict):
    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # int64, as at OpenAI (and torch's seed range)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)  # recorded by the audit hook

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    session_id: str | None = Field(None, min_length=1, max_length=64)  # extension: "new" or an id (serve.sessions)

    def requested_max_tokens(self) -> tuple[int | None, str]:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="One prompt (a string or a one-element list).")
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for /v1/completions

    def requested_max_tokens(self) -> tuple[int | None, str]:
        return self.max_tokens, "max_tokens"

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise invalid("this server takes one prompt per request; send a string or a one-element list",
                          "prompt")
        return self.prompt[0]


def parse_request(model: type[_Sampling], body: bytes) -> _Sampling:
    """JSON bytes -> a validated request, or a 400 that names the offending parameter."""
    try:
        raw = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as err:
        raise invalid(f"the request body is not valid JSON: {err}", None, code="invalid_json") from None
    if not isinstance(raw, dict):
        raise invalid("the request body must be a JSON object", None, code="invalid_json")
    for key, off in NOOP_VALUES.items():
        if key in raw:
            if raw[key] is not None and raw[key] != off:
                raise invalid(f"'{key}' is not supported by this server (only {off!r} is accepted)", key,
                              code="unsupported_parameter")
            raw.pop(key)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise _as_api_error(err) from None


def _as_api_error(err: ValidationError) -> ApiError:
    first = err.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return invalid(f"unrecognized request argument supplied: {param}", param, code="unknown_parameter")
    if first["type"] == "missing":
        return invalid(f"missing required parameter: {param}", param, code="missing_parameter")
    return invalid(f"invalid value for {param}: {first['msg']}", param)


# --------------------------------------------------------------------------- responses
def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Envelope:
    """id / created / model shared by a response and all of its chunks."""

    def __init__(self, request_id: str, model: str, chat: bool):
        self.id = ("chatcmpl-" if chat else "cmpl-") + request_id
        self.created = int(time.time())
        self.model = model
        self.chat = chat

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def response(self, choices: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int) -> dict:
        if self.chat:
            items = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": reason} for i, (text, reason) in enumerate(choices)]
            body = self._base("chat.completion")
        else:
            items = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                     for i, (text, reason) in enumerate(choices)]
            body = self._base("text_completion")
        return {**body, "choices": items, "usage": usage(prompt_tokens, completion_tokens)}

    def chunk(self, index: int, text: str | None = None, finish_reason: str | None = None,
              role: bool = False) -> dict:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._base("chat.completion.chunk"), "choices": [choice], "usage": None}
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self._base("text_completion"), "choices": [choice], "usage": None}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(kind), "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def models_list(model: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                        "owned_by": "domaintune"}]}
