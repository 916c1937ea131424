"""Parsing calls out of the model's text, whole and streamed (the streamed result must equal the whole one)."""

from __future__ import annotations

import json

import pytest

from domaintune.serve.tools.calls import StreamParser, parse_tool_calls

CALL = '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'


@pytest.mark.parametrize("text, content, calls", [
    ("plain answer", "plain answer", []),
    ("Sure. " + CALL, "Sure. ", [("f", {"x": 1})]),
    (CALL + "\n" + CALL.replace('"x": 1', '"x": 2'), "\n", [("f", {"x": 1}), ("f", {"x": 2})]),
    ('<tool_call>{"name": "f", "arguments": "{\\"x\\": 3}"}</tool_call>', "", [("f", {"x": 3})]),
    ('<tool_call>{"name": "f", "parameters": {"x": 4}}', "", [("f", {"x": 4})]),  # unclosed at the end
    ('<tool_call>not json</tool_call>', "<tool_call>not json</tool_call>", []),
    ('{"name": "f", "arguments": {"x": 5}}', "", [("f", {"x": 5})]),
    ('```json\n[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"y": "z"}}]\n```', "",
     [("f", {}), ("g", {"y": "z"})]),
    ('{"answer": 42}', '{"answer": 42}', []),
    ("[1] is a citation", "[1] is a citation", []),
])
def test_parse(text, content, calls):
    got_content, got = parse_tool_calls(text)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got] == calls
    assert all(c.id.startswith("call_") for c in got)


@pytest.mark.parametrize("text", ["Sure. " + CALL, "no calls at all, just text <tool", "a <tool_ca", CALL,
                                  '{"name": "f", "arguments": {}}', "x <tool_call>broken</tool_call> y"])
@pytest.mark.parametrize("size", [1, 3, 100])
def test_streamed_content_equals_the_whole_parse_and_never_leaks_a_call(text, size):
    parser = StreamParser()
    streamed = "".join(parser.feed(text[i:i + size]) for i in range(0, len(text), size))
    assert "<tool_call>" not in streamed
    tail, calls = parser.close()
    content, whole = parse_tool_calls(text)
    assert streamed + tail == content == parser.content
    assert [c.name for c in calls] == [c.name for c in whole]
