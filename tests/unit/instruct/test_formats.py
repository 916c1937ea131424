import json

import pytest

from domaintune.errors import DataError
from domaintune.instruct.formats import (
    RowError,
    convert_row,
    read_conversations,
    validate,
)

CHAT = {"messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Wire fee?"}, {"role": "assistant", "content": "$35."},
                     {"role": "user", "content": "Premier?"}, {"role": "assistant", "content": "$20."}]}
TOOLS_CHAT = {"messages": [{"role": "user", "content": "Rate for 12 months?"},
                           {"role": "assistant", "content": "",
                            "tool_calls": [{"type": "function",
                                            "function": {"name": "td_rate", "arguments": {"months": 12}}}]},
                           {"role": "tool", "content": "3.75"},
                           {"role": "assistant", "content": "3.75% a year."}],
              "tools": [{"type": "function", "function": {"name": "td_rate", "parameters": {}}}]}


def test_alpaca_reads_system_history_instruction_and_input():
    conv = convert_row({"system": "S", "history": [["q1", "a1"]], "instruction": "Summarize", "input": "text",
                        "output": "sum"})
    assert [m["role"] for m in conv["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert conv["messages"][3]["content"] == "Summarize\n\ntext"


# CHAT and TOOLS_CHAT as rows of the other formats: each must read back to the same messages.
CHAT_ROWS = {
    "openai": CHAT,
    "sharegpt": {"system": "Be brief.", "conversations": [{"from": "human", "value": "Wire fee?"},
                                                        {"from": "gpt", "value": "$35."},
                                                        {"from": "human", "value": "Premier?"},
                                                        {"from": "gpt", "value": "$20."}]},
    "alpaca": {"system": "Be brief.", "instruction": "Premier?", "input": "", "output": "$20.",
               "history": [["Wire fee?", "$35."]]},
}
TOOLS_ROWS = {
    "openai": TOOLS_CHAT,
    "sharegpt": {"conversations": [{"from": "human", "value": "Rate for 12 months?"},
                                   {"from": "function_call",
                                    "value": json.dumps({"name": "td_rate", "arguments": {"months": 12}})},
                                   {"from": "observation", "value": "3.75"},
                                   {"from": "gpt", "value": "3.75% a year."}],
                 "tools": TOOLS_CHAT["tools"]},
}


@pytest.mark.parametrize("fmt", sorted(CHAT_ROWS))
def test_every_format_reads_to_the_canonical_form(fmt):
    assert convert_row(CHAT_ROWS[fmt])["messages"] == CHAT["messages"]
    assert convert_row(CHAT_ROWS[fmt], fmt)["messages"] == CHAT["messages"]


@pytest.mark.parametrize("fmt", sorted(TOOLS_ROWS))
def test_tool_calls_read_from_openai_and_sharegpt(fmt):
    back = convert_row(TOOLS_ROWS[fmt])
    assert back["messages"] == TOOLS_CHAT["messages"] and back["tools"] == TOOLS_CHAT["tools"]


@pytest.mark.parametrize(("messages", "reason"), [
    ([], "no messages"),
    ([{"role": "user", "content": "q"}], "last message must be an assistant"),
    ([{"role": "assistant", "content": "a"}], "assistant turn follows nothing"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}], "empty assistant turn"),
    ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
     "roles must alternate"),
    ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
     "system message must come first"),
    ([{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}], "unknown role 'bot'"),
])
def test_validation_names_the_problem(messages, reason):
    assert any(reason in p for p in validate(messages)), validate(messages)


def test_missing_fields_are_named():
    with pytest.raises(RowError, match="'output' is missing"):
        convert_row({"instruction": "q"})
    with pytest.raises(RowError, match="needs 'from' and 'value'"):
        convert_row({"conversations": [{"from": "human"}]})
    with pytest.raises(RowError, match="unknown format"):
        convert_row({"question": "q"})


def test_bad_rows_are_quarantined_with_file_line_and_reason(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [json.dumps(CHAT), "{not json", json.dumps({"messages": [{"role": "user", "content": "q"}]}),
            json.dumps({"instruction": "q", "output": "a"})]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = read_conversations(path)
    assert [c["source_line"] for c in out.conversations] == [1, 4]
    assert [(q["line"], q["path"]) for q in out.quarantined] == [(2, str(path)), (3, str(path))]
    assert "last message must be an assistant" in out.quarantined[1]["reason"]


def test_json_list_files_are_read_and_missing_files_fail_clearly(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([CHAT, CHAT]), encoding="utf-8")
    assert len(read_conversations(path, "openai").conversations) == 2
    with pytest.raises(DataError, match="not found"):
        read_conversations(tmp_path / "nope.jsonl")
