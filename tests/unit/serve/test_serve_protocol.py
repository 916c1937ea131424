"""Request parsing: every refusal is a 400 that names the parameter."""

from __future__ import annotations

import json

import pytest

from domaintune.serve.errors import ApiError
from domaintune.serve.protocol import ChatRequest, CompletionRequest, Envelope, parse_request

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _error(model, body) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse_request(model, json.dumps(body).encode())
    assert err.value.status == 400
    return err.value


def test_defaults_follow_openai():
    req = parse_request(ChatRequest, json.dumps(CHAT).encode())
    assert (req.temperature, req.top_p, req.n, req.stream, req.max_tokens) == (1.0, 1.0, 1, False, None)
    assert parse_request(CompletionRequest, b'{"model": "m", "prompt": "x"}').max_tokens == 16


@pytest.mark.parametrize("body, param, code", [
    ({**CHAT, "temperature": -1}, "temperature", "invalid_value"),
    ({**CHAT, "seed": 2**70}, "seed", "invalid_value"),
    ({**CHAT, "messages": []}, "messages", "invalid_value"),
    ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "invalid_value"),
    ({**CHAT, "stream_options": {"include_usage": True, "x": 1}}, "stream_options.x", "unknown_parameter"),
    ({**CHAT, "frobnicate": True}, "frobnicate", "unknown_parameter"),
    ({**CHAT, "logprobs": True}, "logprobs", "unsupported_parameter"),
    ({"messages": CHAT["messages"]}, "model", "missing_parameter"),
])
def test_refusals_name_the_parameter(body, param, code):
    err = _error(ChatRequest, body)
    assert (err.param, err.code) == (param, code)
    assert err.body()["error"]["type"] == "invalid_request_error"


def test_noop_values_of_unimplemented_fields_are_accepted():
    body = {**CHAT, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "tools": None}
    assert parse_request(ChatRequest, json.dumps(body).encode()).model == "m"


def test_text_parts_and_bad_json():
    body = {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}]}
    assert parse_request(ChatRequest, json.dumps(body).encode()).messages[0].text() == "ab"
    assert _bad(b"[1, 2]").code == "invalid_json" and _bad(b"\xff").code == "invalid_json"
    with pytest.raises(ApiError, match="one prompt"):
        parse_request(CompletionRequest, b'{"model": "m", "prompt": ["a", "b"]}').prompt_text()


def _bad(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse_request(ChatRequest, raw)
    return err.value


def test_chunks_share_id_and_the_usage_chunk_has_no_choices():
    env = Envelope("abc", "m", chat=True)
    first, usage = env.chunk(0, role=True), env.usage_chunk(3, 4)
    assert first["id"] == usage["id"] == "chatcmpl-abc" and first["usage"] is None
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4,
                                                         "total_tokens": 7}
