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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from domaintune.serve.errors import ApiError, invalid

# OpenAI parameters we do not implement, with the value that means "off" (accepted, as it changes nothing).
NOOP_VALUES: dict[str, Any] = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False,
                               "top_logprobs": 0, "logit_bias": {},
                               "echo": False, "best_of": 1, "suffix": None,
                               "response_format": {"type": "text"}, "store": False, "metadata": {}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


# --- tools (function calling): OpenAI's shapes; serve/tools/ plans, renders, parses and runs them
class FunctionSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; omitted for a server-side tool (its own schema)
    strict: bool | None = None


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class CalledFunction(_Strict):
    name: str
    arguments: str  # a JSON object as a string, as OpenAI sends it


class ToolCall(_Strict):
    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"]
    function: CalledFunction


class Message(_Strict):
    # tool_call_id is declared before role so that role's validator can see it
    tool_call_id: str | None = Field(None, max_length=128)  # role "tool": the call this message answers
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # None only for an assistant turn that holds tool_calls
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # role "assistant": the calls the model made in that turn

    @field_validator("role")
    @classmethod
    def _tool_needs_its_call(cls, role: str, info: ValidationInfo) -> str:
        if role == "tool" and not info.data.get("tool_call_id"):
            raise ValueError("a 'tool' message needs tool_call_id: the id of the assistant's tool call it answers")
        return role

    @field_validator("tool_calls")
    @classmethod
    def _calls_only_on_assistant(cls, calls, info: ValidationInfo):
        if calls and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return calls

    @model_validator(mode="after")
    def _content_or_calls(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant message with tool_calls may omit it)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
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
    template: str | None = Field(None, max_length=128)  # extension: prompt template 'name[@version]'

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    session_id: str | None = Field(None, min_length=1, max_length=64)  # extension: "new" or an id (serve.sessions)
    tools: list[ToolSpec] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    kb: str | None = Field(None, max_length=128)  # extension: answer from this knowledge base (docs/kb.md)

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
        self.extra: dict[str, Any] = {}  # extension fields (variant, template, ...): final body and chunks

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
        return {**body, "choices": items, "usage": usage(prompt_tokens, completion_tokens), **self.extra}

    def chunk(self, index: int, text: str | None = None, finish_reason: str | None = None,
              role: bool = False) -> dict:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._base("chat.completion.chunk"), "choices": [choice], "usage": None,
                    **(self.extra if finish_reason else {})}
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self._base("text_completion"), "choices": [choice], "usage": None,
                **(self.extra if finish_reason else {})}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(kind), "choices": [], "usage": usage(prompt_tokens, completion_tokens), **self.extra}


def models_list(model: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                        "owned_by": "domaintune"}]}
