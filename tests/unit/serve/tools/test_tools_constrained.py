"""A forced tool_choice is decoded under the call's schema: a random tiny model on the real CPU engine, through
the real server and the openai client, always answers with a schema-valid call; other requests in the same
batch decode exactly as they would alone; a schema outside the supported subset is a 400 naming the parameter."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from domaintune.serve.tools.registry import jsonschema

BOOKING = {"type": "object", "properties": {
    "city": {"type": "string", "minLength": 1, "maxLength": 12},
    "nights": {"type": "integer", "minimum": 1, "maximum": 30},
    "breakfast": {"type": "boolean"},
    "room": {"enum": ["single", "double", "suite"]},
    "tags": {"type": "array", "items": {"enum": ["quiet", "view", "late"]}, "maxItems": 3}},
    "required": ["city", "nights", "room"]}
BOOK = {"type": "function", "function": {"name": "book_hotel", "description": "Book a hotel", "parameters": BOOKING}}
FLAG = {"type": "function", "function": {"name": "set_flag", "parameters": {
    "type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}}
ASK = [{"role": "user", "content": "Book me a room in Paris."}]
NAMED = {"type": "function", "function": {"name": "book_hotel"}}


def _valid(name: str, arguments: str) -> None:
    schema = {"book_hotel": BOOKING, "set_flag": FLAG["function"]["parameters"]}[name]
    jsonschema().validate(json.loads(arguments), schema)  # raises on any violation


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The varied tiny model with room for the tool preamble (the tiny BPE spends ~1000 tokens on it)."""
    from serve_helpers import build_varied_model_dir

    from domaintune.serve.loading import load_for_serving

    return load_for_serving(build_varied_model_dir(tmp_path_factory.mktemp("wide-model"), context=2048))


@pytest.fixture
def tiny_server(loaded, start_server):
    return start_server(loaded, max_tokens_cap=300, max_running=8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_named_choice_always_yields_a_schema_valid_call(tiny_server, seed):
    reply = tiny_server.client().chat.completions.create(model="tiny", messages=ASK, tools=[BOOK, FLAG],
                                                         tool_choice=NAMED, seed=seed, temperature=1.0,
                                                         max_tokens=300)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.function.name == "book_hotel"
    _valid(call.function.name, call.function.arguments)


@pytest.mark.parametrize("seed", [0, 5])
def test_required_streams_a_valid_call_as_tool_call_deltas(tiny_server, seed):
    stream = tiny_server.client().chat.completions.create(model="tiny", messages=ASK, tools=[BOOK, FLAG],
                                                          tool_choice="required", seed=seed, max_tokens=300,
                                                          stream=True)
    chunks = list(stream)
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    name = "".join(d.function.name or "" for d in deltas)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert name in ("book_hotel", "set_flag") and deltas[0].id.startswith("call_")
    _valid(name, arguments)


def test_constrained_rows_leave_the_other_rows_of_the_batch_alone(tiny_server):
    client = tiny_server.client()
    plain = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me about fees."}], "max_tokens": 24,
             "temperature": 0}
    alone = client.chat.completions.create(**plain).choices[0].message.content

    def forced(seed):
        return client.chat.completions.create(model="tiny", messages=ASK, tools=[BOOK], tool_choice=NAMED,
                                              seed=seed, max_tokens=300)

    with ThreadPoolExecutor(6) as pool:
        calls = [pool.submit(forced, s) for s in range(3)]
        texts = [pool.submit(lambda: client.chat.completions.create(**plain)) for _ in range(3)]
        for future in calls:
            (call,) = future.result().choices[0].message.tool_calls
            _valid(call.function.name, call.function.arguments)
        assert [t.result().choices[0].message.content for t in texts] == [alone] * 3
    assert tiny_server.engine.stats().peak_running >= 2  # they really shared a batch


def test_auto_choice_is_not_constrained(tiny_server):
    reply = tiny_server.client().chat.completions.create(model="tiny", messages=ASK, tools=[BOOK], max_tokens=8,
                                                         temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")  # a random model answers in text


def test_max_tokens_cutting_a_forced_call_is_length_not_an_error(tiny_server):
    reply = tiny_server.client().chat.completions.create(model="tiny", messages=ASK, tools=[BOOK],
                                                         tool_choice=NAMED, max_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.tool_calls is None


@pytest.mark.parametrize("parameters, param", [
    ({"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
     "tools.0.function.parameters.properties.x.anyOf"),
    ({"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}},
     "tools.0.function.parameters.properties.when.format"),
    ({"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}},
     "tools.0.function.parameters.properties.n.multipleOf"),
    ({"type": "object", "properties": {"p": {"type": "object", "properties": {}, "additionalProperties":
                                             {"type": "string"}}}},
     "tools.0.function.parameters.properties.p.additionalProperties"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["y"]},
     "tools.0.function.parameters.required"),
    ({"type": "object", "properties": {"s": {"type": "string", "pattern": "(?<=a)b"}}},
     "tools.0.function.parameters"),  # a pattern llguidance cannot compile
])
def test_a_schema_outside_the_subset_is_a_400_naming_the_parameter(tool_server, parameters, param):
    server = tool_server(lambda p: "never runs")
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=ASK, tools=[tool], tool_choice="required")
    assert err.value.body["param"] == param, err.value.body
    assert not server.engine.requests  # refused before the engine ran
    ok = client.chat.completions.create(model="tiny", messages=ASK, tools=[tool])  # auto: nothing to constrain
    assert ok.choices[0].message.content == "never runs"


def test_the_engine_gets_the_call_schema_only_when_the_client_forces_a_call(tool_server):
    server = tool_server(lambda p: '{"name": "set_flag", "arguments": {"on": true}}')
    client = server.client()
    reply = client.chat.completions.create(model="tiny", messages=ASK, tools=[BOOK, FLAG], tool_choice="required")
    assert reply.choices[0].message.tool_calls[0].function.name == "set_flag"
    schema = server.engine.requests[-1].json_schema
    assert [o["properties"]["name"]["const"] for o in schema["anyOf"]] == ["book_hotel", "set_flag"]
    assert schema["anyOf"][1]["properties"]["arguments"]["additionalProperties"] is False
    assert server.engine.prompts[-1].endswith("<tool_call>")  # the tag is pre-filled, the object constrained
    client.chat.completions.create(model="tiny", messages=ASK, tools=[BOOK, FLAG])
    assert server.engine.requests[-1].json_schema is None


def test_a_guide_masks_only_what_its_schema_forbids(loaded):
    import torch

    from domaintune.serve.engine.constrained import GuideFactory

    tokenizer = loaded[1]
    guide = GuideFactory(tokenizer, len(tokenizer)).guide({"enum": ["yes", "no"]})
    masked = guide.mask(torch.zeros(len(tokenizer) + 4))  # logits wider than the vocabulary: padding is masked
    allowed = {tokenizer.decode([i]) for i in torch.isfinite(masked).nonzero().flatten().tolist()}
    assert allowed and all('"yes"'.startswith(t) or '"no"'.startswith(t) for t in allowed), allowed
    for token in tokenizer.encode('"no"', add_special_tokens=False):
        assert torch.isfinite(guide.mask(torch.zeros(len(tokenizer)))[token])
        guide.advance(token)
    assert guide.complete and guide.failed is None


def test_unconstrained_rows_are_bitwise_unchanged_next_to_a_guided_row(loaded):
    from domaintune.serve.engine.base import GenRequest
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits

    model, tokenizer = loaded
    prompts = [tokenizer(t).input_ids for t in ("The bank charges a fee", "Savings accounts earn")]

    async def run(requests):
        engine = HFEngine(model, tokenizer, "tiny", SchedulerLimits())
        streams = [engine.submit(r) for r in requests]
        engine.start()
        try:
            return [await _text(s) for s in streams]
        finally:
            engine.stop()

    plain = [GenRequest(f"p{i}", p, 16, temperature=0.0) for i, p in enumerate(prompts)]
    guided = GenRequest("g", prompts[0], 200, seed=3, json_schema={"type": "object", "properties": {
        "ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False})
    alone = asyncio.run(run(plain))
    together = asyncio.run(run([plain[0], guided, plain[1]]))
    assert [together[0], together[2]] == alone
    text, reason = together[1]
    assert json.loads(text) in ({"ok": True}, {"ok": False}) and reason == "stop"


async def _text(stream) -> tuple[str, str | None]:
    text, reason = "", None
    async for event in stream:
        text, reason = text + event.text, event.finish_reason or reason
    return text, reason
