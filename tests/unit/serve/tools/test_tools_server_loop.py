"""Server-side tools: the loop, the per-role allowlist, max rounds, timeouts, argument validation, audit."""

from __future__ import annotations

import json
import re

import openai
import pytest

from domaintune.serve.hooks import Principal
from domaintune.serve.permissions import permissions_of

CALC = {"name": "calculator", "kind": "calculator", "roles": ["admin", "user"]}
SLOW = {"name": "slow", "kind": "function", "function": "tools_helpers:slow_tool", "timeout_s": 0.3,
        "parameters": {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]}}
WHOAMI = {"name": "whoami", "kind": "function", "function": "tools_helpers.whoami", "roles": ["*"], "auto": True,
          "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}
BROKEN = {"name": "broken", "kind": "function", "function": "tools_helpers:broken_tool",
          "parameters": {"type": "object", "properties": {}}}
ADMIN_ONLY = {"name": "admin_calc", "kind": "calculator"}  # roles default: admin only
USER = Principal(id="alice", role="user", permissions=permissions_of("user"))
ASK = [{"role": "user", "content": "What is 12 * 7?"}]


def call(name: str, **args) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"


def results(prompt: str) -> list[str]:
    return re.findall(r"<tool_result name=\"[^\"]*\" id=\"[^\"]*\">\n(.*?)\n</tool_result>", prompt, re.S)


def by_name(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def calc_then_answer(prompt: str) -> str:
    found = results(prompt)
    if found:
        return "The answer is " + str(json.loads(found[-1]).get("result", found[-1])) + "."
    return "Computing. " + call("calculator", expression="12 * 7")


def test_server_tool_runs_in_the_loop_and_the_client_sees_only_the_answer(tool_server):
    server = tool_server(calc_then_answer, tools={"server": [CALC]})
    reply = server.client().chat.completions.create(model="tiny", messages=ASK, tools=[by_name("calculator")])
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content == "Computing. The answer is 84."
    assert len(server.engine.prompts) == 2 and '"result": 84' in server.engine.prompts[1]
    extra = reply.model_extra["server_tool_calls"]
    assert [(c["name"], c["status"], c["round"]) for c in extra] == [("calculator", "ok", 0)]
    record = server.audit.records[-1]
    assert record.tools == ["calculator:ok"] and record.status == 200
    assert record.prompt_tokens == reply.usage.prompt_tokens == sum(len(r.prompt_ids) for r in server.engine.requests)


def test_server_tool_loop_streams_too(tool_server):
    server = tool_server(calc_then_answer, tools={"server": [CALC]})
    chunks = list(server.client().chat.completions.create(model="tiny", messages=ASK, stream=True,
                                                          tools=[by_name("calculator")]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Computing. The answer is 84."
    assert not any(c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["server_tool_calls"][0]["status"] == "ok"


def test_a_user_role_listing_a_denied_tool_is_refused_before_the_engine(tool_server):
    server = tool_server(calc_then_answer, principal=USER, tools={"server": [CALC, ADMIN_ONLY]})
    with pytest.raises(openai.PermissionDeniedError) as err:
        server.client().chat.completions.create(model="tiny", messages=ASK, tools=[by_name("admin_calc")])
    assert "role 'user' may not call tool 'admin_calc'" in err.value.message
    assert server.engine.prompts == [] and server.audit.records[-1].status == 403


def test_a_denied_call_the_model_makes_gets_a_tool_error_not_a_call(tool_server, monkeypatch):
    executed = []
    from domaintune.serve.tools.builtins import calculator

    monkeypatch.setattr(calculator, "calculator", lambda **kw: executed.append(kw) or {"result": 0})
    # the model calls admin_calc, which the request did not enable and the role may not call
    script = lambda p: "Could not." if results(p) else call("admin_calc", expression="1+1")  # noqa: E731
    server = tool_server(script, principal=USER, tools={"server": [CALC, ADMIN_ONLY]})
    reply = server.client().chat.completions.create(model="tiny", messages=ASK, tools=[by_name("calculator")])
    assert executed == [] and reply.choices[0].message.content == "Could not."
    error = json.loads(results(server.engine.prompts[1])[0])["error"]
    assert "permission denied: role 'user' may not call tool 'admin_calc'" in error and "not called" in error
    assert server.audit.records[-1].tools == ["admin_calc:denied"]


def test_role_allowlist_is_checked_at_call_time_too(tool_server):
    # auto offers whoami to everyone; "calculator" here is admin-only, enabled by an admin-only auto entry
    calc_auto = {**ADMIN_ONLY, "name": "calculator", "auto": True}
    script = lambda p: "ok" if results(p) else call("calculator", expression="2")  # noqa: E731
    server = tool_server(script, principal=USER, tools={"server": [calc_auto, WHOAMI]})
    server.client().chat.completions.create(model="tiny", messages=ASK)
    prompt = server.engine.prompts[0]
    assert '"name": "whoami"' in prompt and '"name": "calculator"' not in prompt  # not offered to a user
    assert server.audit.records[-1].tools == ["calculator:denied"]


def test_function_tool_gets_the_server_principal_not_the_models(tool_server):
    script = lambda p: "done" if results(p) else call("whoami", principal="root")  # noqa: E731
    server = tool_server(script, principal=USER, tools={"server": [WHOAMI]})
    server.client().chat.completions.create(model="tiny", messages=ASK)
    # additionalProperties: false refuses the forged argument before the function runs
    assert "invalid arguments" in results(server.engine.prompts[1])[0]
    script2 = lambda p: "done" if results(p) else call("whoami")  # noqa: E731
    server2 = tool_server(script2, principal=USER, tools={"server": [WHOAMI]})
    server2.client().chat.completions.create(model="tiny", messages=ASK)
    assert json.loads(results(server2.engine.prompts[1])[0]) == {"id": "alice", "role": "user"}


def test_max_rounds_cuts_a_model_that_keeps_calling(tool_server):
    server = tool_server(lambda p: call("calculator", expression="1+1"), tools={"server": [CALC], "max_rounds": 2})
    reply = server.client().chat.completions.create(model="tiny", messages=ASK, tools=[by_name("calculator")])
    assert reply.choices[0].finish_reason == "length" and len(server.engine.prompts) == 3
    assert server.audit.records[-1].tools == ["calculator:ok", "calculator:ok", "calculator:rounds_exhausted"]


def test_timeout_invalid_arguments_and_a_failing_tool_are_errors_to_the_model(tool_server):
    steps = iter([call("slow", seconds=5), call("slow", seconds="soon"), call("broken"), "giving up"])
    server = tool_server(lambda p: next(steps), tools={"server": [SLOW, BROKEN], "max_rounds": 5})
    reply = server.client().chat.completions.create(model="tiny", messages=ASK,
                                                    tools=[by_name("slow"), by_name("broken")])
    assert reply.choices[0].message.content == "giving up"
    found = results(server.engine.prompts[-1])
    assert "did not answer within 0.3 s" in found[0]
    assert "invalid arguments at seconds" in found[1] and "'soon' is not of type 'number'" in found[1]
    assert "RuntimeError: backend down" in found[2]
    assert server.audit.records[-1].tools == ["slow:timeout", "slow:invalid_arguments", "broken:error"]


def test_server_tool_schema_cannot_be_overridden_and_bad_config_is_a_config_error(tool_server):
    server = tool_server(calc_then_answer, tools={"server": [CALC]})
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="tiny", messages=ASK, tools=[{
            "type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}])
    assert err.value.body["param"] == "tools.0.function.parameters"
    from domaintune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"serve.tools.server\[0\] \(kb, kind kb_search\): .*configure the `kb:`"):
        tool_server(calc_then_answer, tools={"server": [{"name": "kb", "kind": "kb_search"}]})
    with pytest.raises(ConfigError, match="No module named 'no_such_module'"):
        tool_server(calc_then_answer, tools={"server": [{**BROKEN, "function": "no_such_module:f"}]})


LONG = {"name": "long", "kind": "function", "function": "tools_helpers:long_tool",
        "parameters": {"type": "object", "properties": {}}}


def test_a_later_round_past_the_context_cap_is_a_400_and_in_band_when_streaming(tool_server, tiny_tokenizer):
    script = lambda p: "never" if results(p) else call("long")  # noqa: E731
    server = tool_server(script, tools={"server": [LONG]}, max_prompt_tokens=1500)
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=ASK, tools=[by_name("long")])
    assert err.value.body["code"] == "context_length_exceeded" and len(server.engine.prompts) == 1
    assert server.audit.records[-1].status == 400 and server.audit.records[-1].tools == ["long:ok"]
    with pytest.raises(openai.APIError, match="serve.max_prompt_tokens"):
        list(client.chat.completions.create(model="tiny", messages=ASK, tools=[by_name("long")], stream=True))
    assert server.audit.records[-1].error_code == "context_length_exceeded"


def test_a_turn_with_a_client_call_returns_it_and_skips_the_server_calls(tool_server, monkeypatch):
    from domaintune.serve.tools.builtins import calculator

    executed = []
    monkeypatch.setattr(calculator, "calculator", lambda **kw: executed.append(kw) or {"result": 0})
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    server = tool_server(lambda p: call("calculator", expression="1") + call("get_weather", city="Oslo"),
                         tools={"server": [CALC]})
    reply = server.client().chat.completions.create(model="tiny", messages=ASK,
                                                    tools=[by_name("calculator"), weather])
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["get_weather"]
    assert executed == [] and server.audit.records[-1].tools == ["calculator:skipped", "get_weather:client"]
