"""Built-in `kb_search`: the knowledge base searched with the CALLER's rights.

It is written against a small protocol (anything with `.search(principal, query, k)`), so the tool
never sees documents the principal may not read: the ACL mask is applied inside the search. What it
returns is retrieved text, i.e. untrusted data: the tool loop hands it to the model as a tool result,
never as instructions, and nothing in it can enable or trigger a call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

DESCRIPTION = "Search the knowledge base for passages relevant to a question; returns titles and text."
PARAMETERS = {"type": "object", "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 1000,
                                                         "description": "What to look for."}},
              "required": ["query"], "additionalProperties": False}
_FIELDS = ("document_id", "chunk_id", "title", "text", "excerpt", "score", "start", "end", "version")


class Searchable(Protocol):
    def search(self, principal, query: str, k: int) -> list: ...


def _as_dict(hit: Any) -> dict:
    if isinstance(hit, dict):
        raw = hit
    elif dataclasses.is_dataclass(hit) and not isinstance(hit, type):
        raw = dataclasses.asdict(hit)
    else:
        raw = {name: getattr(hit, name) for name in _FIELDS if hasattr(hit, name)}
    chunk = raw.get("chunk")  # a hit may nest its chunk (kb's Hit(chunk=..., score=...))
    if isinstance(chunk, dict):
        raw = {**chunk, **{k: v for k, v in raw.items() if k != "chunk"}}
    return {k: raw[k] for k in _FIELDS if k in raw and raw[k] is not None}


def search(kb: Searchable, principal, query: str, k: int) -> dict:
    hits = kb.search(principal, query, k)
    return {"results": [_as_dict(hit) for hit in list(hits)[:k]]}
