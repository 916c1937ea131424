"""The vLLM engine behind our request path, against a fake vLLM OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from serve_helpers import ThreadServer, wait_for
from sse_starlette import EventSourceResponse

from domaintune.config.serve import ServeConfig, VLLMConfig
from domaintune.serve.app import create_app
from domaintune.serve.engine.vllm import VLLMEngine
from domaintune.serve.hooks import Hooks, Principal
from domaintune.serve.render import ChatRenderer


def fake_vllm(received: list, cancelled: list) -> FastAPI:
    """The shapes of vLLM's /v1/models and streaming /v1/completions (one token per chunk, usage last)."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "upstream-model", "object": "model", "max_model_len": 128}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        received.append({**body, "_authorization": request.headers.get("authorization")})
        if body["prompt"][:1] == [0]:
            return JSONResponse({"error": {"message": "upstream exploded", "type": "BadRequestError",
                                           "code": 400}}, status_code=400)
        slow = body["max_tokens"] > 50
        if "structured_outputs" in body:  # vLLM decodes under the schema: answer a valid call object
            return EventSourceResponse(_guided(body), sep="\n")

        async def events():
            try:
                for i in range(body["max_tokens"]):
                    await asyncio.sleep(0.05 if slow else 0)
                    last = i == body["max_tokens"] - 1
                    yield json.dumps({"id": "cmpl-x", "object": "text_completion", "model": "upstream-model",
                                      "choices": [{"index": 0, "text": f"t{i} ", "logprobs": None,
                                                   "finish_reason": "length" if last else None}], "usage": None})
                yield json.dumps({"id": "cmpl-x", "object": "text_completion", "choices": [],
                                  "usage": {"prompt_tokens": len(body["prompt"]),
                                            "completion_tokens": body["max_tokens"],
                                            "total_tokens": len(body["prompt"]) + body["max_tokens"]}})
                yield "[DONE]"
            except asyncio.CancelledError:
                cancelled.append(body["max_tokens"])
                raise

        return EventSourceResponse(events(), sep="\n")

    return app


async def _guided(body: dict):
    schema = body["structured_outputs"]["json"]
    text = json.dumps({"name": schema["properties"]["name"]["const"], "arguments": {"city": "Oslo"}})
    yield json.dumps({"id": "cmpl-g", "object": "text_completion", "choices": [
        {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}], "usage": None})
    yield json.dumps({"id": "cmpl-g", "object": "text_completion", "choices": [], "usage": {
        "prompt_tokens": len(body["prompt"]), "completion_tokens": 9, "total_tokens": len(body["prompt"]) + 9}})
    yield "[DONE]"


class TenantFromHeader:
    def authenticate(self, headers):
        return Principal(id="u", tenant=headers.get("x-tenant", "default"))


@pytest.fixture
def stack(loaded, tmp_path):
    received, cancelled = [], []
    upstream = ThreadServer(fake_vllm(received, cancelled), ServeConfig(port=0))
    (tmp_path / "vllm.key").write_text("sk-upstream\n", encoding="utf-8")
    settings = ServeConfig(port=0, engine="vllm", max_tokens_cap=100,
                             vllm=VLLMConfig(url=upstream.url, api_key_file=tmp_path / "vllm.key"))
    tokenizer = loaded[1]
    engine = VLLMEngine(settings.vllm, tokenizer, "tiny")
    ours = ThreadServer(create_app(engine, ChatRenderer(tokenizer), settings, Hooks(auth=TenantFromHeader())),
                        settings)
    ours.received, ours.cancelled, ours.tokenizer = received, cancelled, tokenizer
    yield ours
    ours.stop()
    upstream.stop()


def test_chat_is_proxied_as_token_ids_with_a_server_side_cache_salt(stack):
    client = stack.client(default_headers={"x-tenant": "bank-a"})
    messages = [{"role": "user", "content": "fee?"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=3, temperature=0, seed=5)
    assert reply.choices[0].message.content == "t0 t1 t2 " and reply.choices[0].finish_reason == "length"
    sent = stack.received[-1]
    expected_ids = stack.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                       return_dict=True)["input_ids"]
    assert sent["prompt"] == expected_ids and sent["model"] == "upstream-model"
    assert sent["_authorization"] == "Bearer sk-upstream"  # from serve.vllm.api_key_file
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (3, 0.0, 5)
    assert reply.usage.prompt_tokens == len(expected_ids) and reply.usage.completion_tokens == 3
    stack.client(default_headers={"x-tenant": "bank-b"}).chat.completions.create(
        model="tiny", messages=messages, max_tokens=1)
    salt_a, salt_b = stack.received[-2]["cache_salt"], stack.received[-1]["cache_salt"]
    assert salt_a and salt_b and salt_a != salt_b


def test_a_client_cannot_choose_the_cache_salt(stack):
    with pytest.raises(openai.BadRequestError) as err:
        stack.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                               extra_body={"cache_salt": "victim"})
    assert err.value.param == "cache_salt" and not stack.received


def test_streaming_through_vllm_and_context_length_from_upstream(stack):
    client = stack.client()
    chunks = list(client.completions.create(model="tiny", prompt="fee", max_tokens=4, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "t0 t1 t2 t3 "
    assert chunks[-1].usage.completion_tokens == 4
    with pytest.raises(openai.BadRequestError) as err:  # upstream max_model_len is 128
        client.completions.create(model="tiny", prompt="fee", max_tokens=100 + 30)
    assert err.value.param == "max_tokens"


def test_upstream_errors_reach_the_client_and_disconnects_cancel_upstream(stack, monkeypatch):
    client = stack.client()
    monkeypatch.setattr(stack.app.state.path, "renderer", lambda prompt: [0, 1, 2])  # the fake refuses [0, ...]
    with pytest.raises(openai.InternalServerError, match="upstream exploded"):
        client.completions.create(model="tiny", prompt="fee", max_tokens=2)
    monkeypatch.setattr(stack.app.state.path, "renderer", lambda prompt: [5, 6])
    stream = client.completions.create(model="tiny", prompt="fee", max_tokens=90, stream=True)
    next(iter(stream))
    stream.close()
    assert wait_for(lambda: stack.cancelled == [90]), "closing our stream did not close the upstream one"
    assert wait_for(lambda: stack.engine.stats().running == 0)


def test_a_forced_tool_choice_reaches_vllm_as_structured_outputs(stack):
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    stack.engine.context_length = 4096  # the tiny BPE spends ~600 tokens on the tool preamble; the fake says 128
    reply = stack.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "weather?"}], tools=[weather], max_tokens=40,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    (call,) = reply.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
    schema = stack.received[-1]["structured_outputs"]["json"]
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"]["required"] == ["city"]
    stack.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=2)
    assert "structured_outputs" not in stack.received[-1]  # only a forced call is constrained
