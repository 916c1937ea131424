"""Tool calls out of the model's own text: `<tool_call>{json}</tool_call>` blocks, or a whole reply that is a
JSON call object (or a list of them), as instruction-tuned models emit them.

Only text the model generated in its current turn is parsed here: tool results, retrieved passages and
earlier turns are never scanned for calls, so text inside them cannot become a call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|\Z)", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


@dataclass
class ParsedCall:
    name: str
    arguments: str  # a JSON object as a string (OpenAI's wire form)
    id: str = ""

    def __post_init__(self):
        self.id = self.id or "call_" + uuid.uuid4().hex[:24]

    def openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def _as_call(obj) -> ParsedCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models emit the arguments already as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(obj["name"], json.dumps(args, ensure_ascii=False))


def _calls_of_json(text: str) -> list[ParsedCall] | None:
    fenced = _FENCE.match(text.strip())
    try:
        obj = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return None
    items = obj if isinstance(obj, list) else [obj]
    calls = [_as_call(item) for item in items]
    return calls if calls and all(calls) else None


def parse_tool_calls(text: str) -> tuple[str, list[ParsedCall]]:
    """(content outside the calls, calls). A block whose JSON is not a call stays in the content."""
    if OPEN not in text:
        calls = _calls_of_json(text) if text.strip()[:1] in ("{", "[", "`") else None
        return ("", calls) if calls else (text, [])
    content, calls, last = [], [], 0
    for match in _BLOCK.finditer(text):
        found = _calls_of_json(match.group(1).strip())
        if found is None:
            continue
        content.append(text[last:match.start()])
        calls.extend(found)
        last = match.end()
    content.append(text[last:])
    return "".join(content), calls


def _held_suffix(text: str) -> int:
    """Length of the longest end of `text` that could be the start of OPEN (held back while streaming)."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0


class StreamParser:
    """Feeds the model's text as it arrives and releases only what can no longer turn out to be a call.

    Content before a `<tool_call>` block streams at once; a reply that starts like JSON is held to the
    end (it may be a bare call). `close()` returns the rest of the content and the calls, consistent
    with `parse_tool_calls` on the whole text."""

    def __init__(self, prefix: str = ""):
        self.text = prefix  # a forced choice pre-fills the start of the call in the prompt
        self.sent = 0
        self.content = ""

    def feed(self, piece: str) -> str:
        self.text += piece
        stripped = self.text.lstrip()
        if not stripped or stripped[0] in "{[`":
            return ""
        cut = self.text.find(OPEN)
        end = cut if cut >= 0 else len(self.text) - _held_suffix(self.text)
        out = self.text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        self.content += out
        return out

    def close(self) -> tuple[str, list[ParsedCall]]:
        content, calls = parse_tool_calls(self.text)
        already = self.content
        tail = content[len(already):] if content.startswith(already) else content.removeprefix(already)
        self.content += tail
        return tail, calls
