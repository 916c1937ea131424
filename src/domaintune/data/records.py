"""The two things that flow through the data stage: a kept `Record` or a quarantined `Reject`.

Readers turn rows into records; every later step takes a record and returns it (possibly
changed) or a reject. Nothing is dropped without becoming a reject with a reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from domaintune.governance.neardup import exact_digest

EXCERPT_CHARS = 200
# Lone surrogates cannot be written as UTF-8: they come from undecodable bytes (csv reader's
# surrogateescape) or from JSON escapes such as "\udc80" that name no real character.
_SURROGATE = re.compile("[\ud800-\udfff]")


def excerpt(text: str | None) -> str:
    if not text:
        return ""
    return _SURROGATE.sub("\ufffd", text[:EXCERPT_CHARS])


@dataclass(frozen=True)
class SourceContext:
    """What a reader needs to know about the `data.sources[index]` entry it is reading."""

    index: int
    name: str  # lineage name: the configured name, else the configured path
    label: str  # short name used in derived ids (configured name, else the root folder's name)
    stream: str
    fmt: str
    root: Path  # derived ids use file paths relative to this folder
    path: str = ""  # the configured path (file, folder or glob)
    text_field: str = "text"
    id_field: str | None = None
    encoding: str = "utf-8"
    max_record_bytes: int = 8 << 20
    conversation_field: str = "conversation_id"
    speaker_field: str = "speaker"
    turn_field: str | None = "turn"
    html: str = "main"  # html: main content (trafilatura) or all visible text

    @property
    def key(self) -> str:
        return f"data.sources[{self.index}]"

    def derived_id(self, path: Path, line: int | None) -> str:
        rel = _relative(path, self.root)
        return f"{self.label}:{rel}" if line is None else f"{self.label}:{rel}:{line}"


@lru_cache(maxsize=4096)
def _relative(path: Path, root: Path) -> str:
    # Cached: called once per row, and pathlib arithmetic costs more than the rest of the row.
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def text_sha(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


@dataclass
class Record:
    id: str
    text: str
    stream: str
    source_name: str
    path: str
    line: int | None
    steps: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def sha(self) -> str:
        return text_sha(self.text)

    @property
    def digest(self) -> bytes:
        """The exact-duplicate key of the text (`governance.neardup.exact_digest`)."""
        return exact_digest(self.text)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "stream": self.stream,
            "source": {"name": self.source_name, "path": self.path, "line": self.line},
            "steps": list(self.steps),
            "meta": self.meta,
        }


@dataclass
class Reject:
    reason: str
    detail: str
    file: str
    line: int | None
    source: str
    excerpt: str = ""

    @classmethod
    def of(cls, rec: Record, reason: str, detail: str) -> Reject:
        """Quarantine a record that a step refused."""
        return cls(reason, detail, rec.path, rec.line, rec.source_name, excerpt(rec.text))

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason, "detail": self.detail,
                "source": self.source, "excerpt": self.excerpt}


Item = Record | Reject
Reader = Callable[[Path, SourceContext], Iterator[Item]]  # what every format reader is


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _row_id(row: dict[str, Any], ctx: SourceContext, path: Path, line: int | None) -> str:
    value = row.get(ctx.id_field) if ctx.id_field else None
    # bools are ints in Python but make useless ids; containers have no canonical string form.
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) != "":
        return str(value)
    return ctx.derived_id(path, line)


def row_to_record(row: Any, ctx: SourceContext, path: Path, line: int | None,
                  raw: str) -> Record | Reject:
    """Turn one parsed jsonl/csv row into a record, or say precisely why it cannot be one."""
    def reject(reason: str, detail: str) -> Reject:
        return Reject(reason, detail, str(path), line, ctx.name, excerpt(raw.strip()))

    if not isinstance(row, dict):
        return reject("not_an_object", f"row is a JSON {type(row).__name__}, expected an object "
                                       f"with a '{ctx.text_field}' field")
    text = row.get(ctx.text_field)
    if not isinstance(text, str):
        what = ("is missing" if ctx.text_field not in row
                else f"is {type(text).__name__}, not a string")
        keys = ", ".join(sorted(row)[:10]) or "none"
        return reject("missing_text_field",
                      f"field '{ctx.text_field}' {what} (row fields: {keys}); set text_field in "
                      f"{ctx.key} to the field that holds the text")
    drop = {ctx.text_field, ctx.id_field}
    meta = {k: v for k, v in row.items() if k not in drop}
    return Record(_row_id(row, ctx, path, line), text, ctx.stream, ctx.name, str(path), line,
                  meta=meta)
