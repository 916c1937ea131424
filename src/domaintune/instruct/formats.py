"""Instruction data formats -> one canonical conversation (OpenAI-style messages).

Canonical form: `{"messages": [{"role", "content"[, "tool_calls"]}], "tools": [...] | None}` with
roles system/user/assistant/tool. Readers accept:
- Alpaca: instruction, input, output, optional system and history [[user, assistant], ...];
- ShareGPT: conversations [{from, value}] (human/gpt/system/function_call/observation), optional
  system and tools;
- OpenAI chat JSONL: messages [{role, content}], optional tools.
Every row is validated; a bad row is quarantined with the reason instead of failing the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}


class RowError(ValueError):
    """One row cannot be used; the message is the quarantine reason."""


def detect_format(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    raise RowError(f"unknown format: no 'messages' (openai), 'conversations' (sharegpt) or 'instruction' "
                   f"(alpaca) field; fields are {sorted(row)}")


def _text(row: dict[str, Any], key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise RowError(f"field '{key}' is missing" if value is None else f"field '{key}' must be a string")
    return value


def from_alpaca(row: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": "system", "content": _text(row, "system")}] if row.get("system") else []
    history = row.get("history") or []
    if not isinstance(history, list) or any(not (isinstance(h, list | tuple) and len(h) == 2) for h in history):
        raise RowError("field 'history' must be a list of [user, assistant] pairs")
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row, "output")}]
    return {"messages": messages, "tools": None}


def _tools(row: dict[str, Any]) -> list | None:
    tools = row.get("tools")
    if isinstance(tools, str):  # ShareGPT files often store tools as a JSON string
        try:
            tools = json.loads(tools) if tools.strip() else None
        except json.JSONDecodeError as exc:
            raise RowError(f"field 'tools' is not valid JSON: {exc}") from None
    if tools is not None and not isinstance(tools, list):
        raise RowError("field 'tools' must be a list of tool definitions")
    return tools or None


def _function_call(value: str) -> dict[str, Any]:
    try:
        call = json.loads(value)
    except (json.JSONDecodeError, TypeError):
        raise RowError("a 'function_call' turn must hold JSON {\"name\": ..., \"arguments\": ...}") from None
    if not isinstance(call, dict) or "name" not in call:
        raise RowError("a 'function_call' turn must hold JSON {\"name\": ..., \"arguments\": ...}")
    return {"type": "function", "function": {"name": call["name"], "arguments": call.get("arguments", {})}}


def from_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise RowError("field 'conversations' must be a list of {from, value} turns")
    messages = [{"role": "system", "content": _text(row, "system")}] if row.get("system") else []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RowError(f"turn {i}: needs 'from' and 'value'")
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            raise RowError(f"turn {i}: unknown speaker '{turn['from']}' (use {', '.join(SHAREGPT_ROLES)})")
        if turn["from"] == "function_call":
            messages.append({"role": "assistant", "content": "", "tool_calls": [_function_call(turn["value"])]})
        else:
            messages.append({"role": role, "content": turn["value"]})
    return {"messages": messages, "tools": _tools(row)}


def from_openai(row: dict[str, Any]) -> dict[str, Any]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise RowError("field 'messages' must be a list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise RowError(f"message {i}: needs 'role' and 'content'")
        msg = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        out.append(msg)
    return {"messages": out, "tools": _tools(row)}


READERS = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_openai}


def validate(messages: list[dict[str, Any]]) -> list[str]:
    """Every problem of one conversation (empty list: usable). Training needs: an optional system
    message first, then a user turn, assistant turns answering user or tool turns, and an
    assistant turn last (that is what the model learns to produce)."""
    if not messages:
        return ["no messages"]
    problems = []
    previous = None
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            problems.append(f"message {i}: unknown role '{role}' (use {', '.join(ROLES)})")
        elif role == "system" and i:
            problems.append(f"message {i}: a system message must come first")
        elif role == "user" and previous not in (None, "system", "assistant"):
            problems.append(f"message {i}: user turn follows a {previous} turn (roles must alternate)")
        elif role == "assistant" and previous not in ("user", "tool"):
            problems.append(f"message {i}: assistant turn follows {previous or 'nothing'} (expected a user turn)")
        elif role == "tool" and previous not in ("assistant", "tool"):
            problems.append(f"message {i}: tool result without a preceding assistant turn")
        if not isinstance(content, str):
            problems.append(f"message {i}: content must be a string")
        elif not content.strip() and not m.get("tool_calls"):
            problems.append(f"message {i}: empty {role} turn")
        previous = role
    if messages[-1].get("role") != "assistant":
        problems.append("the last message must be an assistant turn (the answer to learn)")
    return problems


def convert_row(row: dict[str, Any], fmt: str = "auto") -> dict[str, Any]:
    """One raw row -> a validated canonical conversation (RowError names the problem)."""
    if not isinstance(row, dict):
        raise RowError("a row must be a JSON object")
    fmt = detect_format(row) if fmt == "auto" else fmt
    conv = READERS[fmt](row)
    problems = validate(conv["messages"])
    if problems:
        raise RowError("; ".join(problems))
    return conv


@dataclass
class ReadResult:
    conversations: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # {path, line, reason, row}


def read_conversations(path: Path, fmt: str = "auto") -> ReadResult:
    """Read a JSONL (or a JSON list) file; bad rows go to `quarantined` with file, line and reason."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SFT data file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = [(i + 1, json.dumps(r)) for i, r in enumerate(json.loads(text))]
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); use JSONL (one object per line) or a JSON list") from None
    else:
        rows = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    out = ReadResult()
    for line_no, line in rows:
        try:
            row = json.loads(line)
            conv = convert_row(row, fmt)
        except (json.JSONDecodeError, RowError) as exc:
            out.quarantined.append({"path": str(path), "line": line_no, "reason": str(exc), "row": line[:2000]})
            continue
        out.conversations.append(conv | {"source_line": line_no})
    return out
