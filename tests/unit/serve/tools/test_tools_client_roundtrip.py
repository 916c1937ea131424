"""Client-side tools through the real server and the official openai client (non-stream and stream)."""

from __future__ import annotations

import json

import openai
import pytest

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def weather_script(prompt: str) -> str:
    """Calls get_weather until a tool result is in the prompt, then answers from it."""
    if "<tool_result name=" in prompt:
        return "It is sunny in Paris, 21 C."
    return "Let me check. " + CALL


def test_non_stream_returns_the_call_in_openai_shape_and_the_result_round_trips(tool_server):
    server = tool_server(weather_script)
    client = server.client()
    reply = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.message.content == "Let me check. "
    prompt = server.engine.prompts[0]
    assert '"name": "get_weather"' in prompt and "<tool_call>" in prompt  # the preamble described the tool

    history = ASK + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "temp_c": 21}'}]
    final = client.chat.completions.create(model="tiny", messages=history, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content == "It is sunny in Paris, 21 C."
    second = server.engine.prompts[1]
    assert f'<tool_result name="get_weather" id="{call.id}">' in second and '"temp_c": 21' in second
    assert [r.tools for r in server.audit.records] == [["get_weather:client"], []]
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0


def test_stream_sends_tool_call_deltas_that_reassemble(tool_server):
    server = tool_server(weather_script)
    chunks = list(server.client().chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Let me check. " and "<tool" not in content
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id.startswith("call_") and deltas[0].type == "function"
    assert deltas[0].function.name == "get_weather"
    args = "".join(d.function.arguments or "" for d in deltas if d.index == 0)
    assert json.loads(args) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_plain_text_with_tools_offered_is_an_ordinary_answer(tool_server):
    server = tool_server(lambda prompt: "No tool needed: 4.")
    client = server.client()
    reply = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER])
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content == "No tool needed: 4."
    chunks = list(client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "No tool needed: 4."


def test_bare_json_call_and_parallel_calls(tool_server):
    two = ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
           '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>')
    server = tool_server(lambda p: two if "Rome" in p.rsplit("user", 1)[-1] else
                         '{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    client = server.client()
    bare = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER])
    assert bare.choices[0].message.content is None
    assert json.loads(bare.choices[0].message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    both = [{"role": "user", "content": "Paris and Rome?"}]
    reply = client.chat.completions.create(model="tiny", messages=both, tools=[WEATHER])
    assert [json.loads(c.function.arguments)["city"] for c in reply.choices[0].message.tool_calls] == ["Paris", "Rome"]
    assert len({c.id for c in reply.choices[0].message.tool_calls}) == 2
    one = client.chat.completions.create(model="tiny", messages=both, tools=[WEATHER], parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls) == 1
    assert server.audit.records[-1].tools == ["get_weather:dropped", "get_weather:client"]


def test_forced_choice_prefills_the_call_and_none_offers_nothing(tool_server):
    # the engine decodes the call object under plan.json_schema (test_tools_constrained.py); this fake obeys it
    server = tool_server(lambda p: '{"name": "get_weather", "arguments": {"city": "Lima"}}' if p.endswith(
        "<tool_call>") else "plain")
    client = server.client()
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER], tool_choice=named)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == {"city": "Lima"}
    assert "You must call the tool 'get_weather' now." in server.engine.prompts[-1]
    off = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER], tool_choice="none")
    assert off.choices[0].message.content == "plain" and "get_weather" not in server.engine.prompts[-1]


def test_required_without_a_call_is_a_4xx_never_a_500(tool_server):
    # only an engine that ignored the constraint (or a stop string cutting the call) can end a forced turn
    # without a call: the client gets a 422 naming tool_choice, not a server error
    server = tool_server(lambda p: "I refuse.")
    with pytest.raises(openai.UnprocessableEntityError) as err:
        server.client().chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER], tool_choice="required")
    assert err.value.body["code"] == "invalid_tool_call" and err.value.body["param"] == "tool_choice"


@pytest.mark.parametrize("kwargs, param", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"n": 2}, "n"),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
     "tools.0.function.parameters"),
])
def test_bad_tool_requests_are_400_naming_the_parameter(tool_server, kwargs, param):
    server = tool_server(lambda p: "x")
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="tiny", messages=ASK, **{"tools": [WEATHER], **kwargs})
    assert err.value.body["param"] == param and server.engine.prompts == []


def test_tool_message_must_answer_an_earlier_call(tool_server):
    server = tool_server(lambda p: "x")
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="tiny", messages=ASK + [
            {"role": "tool", "tool_call_id": "call_forged", "content": "{}"}], tools=[WEATHER])
    assert err.value.body["param"] == "messages.1.tool_call_id"
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="tiny", messages=[{"role": "tool", "content": "x"}])
    assert err.value.body["param"] == "messages.0.role"
