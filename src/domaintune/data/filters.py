"""The minimum-length filter: judges one record at a time (the quality filters are in quality.py)."""

from __future__ import annotations

from domaintune.data.records import Record, Reject


class MinChars:
    """Reject documents shorter than `data.min_chars` once normalized (empty ones included)."""

    name = "filter.min_chars"

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def __call__(self, rec: Record) -> Record | Reject:
        n = len(rec.text)
        if n >= self.min_chars and n > 0:
            return rec
        what = "empty" if n == 0 else f"{n} chars"
        return Reject.of(rec, "too_short", f"{what} after normalization, below data.min_chars="
                                           f"{self.min_chars}; lower it to keep such documents")
