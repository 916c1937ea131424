"""Counts per source and per stream: what was read, kept, rejected (by reason) and how much text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from domaintune.data.dedup import EXACT_DUPLICATE, NEAR_DUPLICATE
from domaintune.data.pii import META_KEY as PII_META_KEY
from domaintune.data.records import Record, Reject, SourceContext


@dataclass
class Tally:
    records: int = 0
    kept: int = 0
    chars: int = 0
    reasons: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)  # redacted findings per type in kept records

    def add(self, item: Record | Reject) -> None:
        self.records += 1
        if isinstance(item, Reject):
            self.reasons[item.reason] += 1
        else:
            self.kept += 1
            self.chars += len(item.text)
            found = item.meta.get(PII_META_KEY)
            if isinstance(found, dict):
                self.pii.update(found)

    @property
    def duplicates(self) -> int:
        return self.reasons[EXACT_DUPLICATE] + self.reasons[NEAR_DUPLICATE]

    @property
    def rejected(self) -> int:
        """Rejects that signal a data problem; duplicates are expected and not counted."""
        return sum(self.reasons.values()) - self.duplicates

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "kept": self.kept, "rejected": self.rejected,
                "duplicates": self.duplicates, "chars": self.chars,
                "rejected_by_reason": dict(sorted(self.reasons.items())),
                "pii_by_type": dict(sorted(self.pii.items()))}


class StageStats:
    """Tallies per `data.sources[i]`, per stream, and for the whole run."""

    def __init__(self, sources: list[tuple[SourceContext, list]]):
        self.sources = [(ctx, len(files), Tally()) for ctx, files in sources]
        self.streams = {ctx.stream: Tally() for ctx, _ in sources}
        self.total = Tally()

    def add(self, ctx: SourceContext, item: Record | Reject) -> None:
        for tally in (self.sources[ctx.index][2], self.streams[ctx.stream], self.total):
            tally.add(item)

    def source_tally(self, ctx: SourceContext) -> Tally:
        return self.sources[ctx.index][2]

    @property
    def reject_fraction(self) -> float:
        return self.total.rejected / self.total.records if self.total.records else 0.0

    def to_json(self, docs: dict[str, dict[str, int]]) -> dict[str, Any]:
        """`docs` is stream -> split -> number of documents."""
        sources = [{"index": ctx.index, "name": ctx.name, "path": ctx.path, "stream": ctx.stream,
                    "files": n_files,
                    **tally.to_json()} for ctx, n_files, tally in self.sources]
        streams = {name: {**tally.to_json(), "docs": docs.get(name, {})}
                   for name, tally in self.streams.items()}
        total = {**self.total.to_json(), "reject_fraction": round(self.reject_fraction, 6)}
        return {"total": total, "sources": sources, "streams": streams}
