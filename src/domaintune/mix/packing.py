"""Best-fit-decreasing packing of segments into rows of at most `seq_len` tokens.

Rows carry segment boundaries, so training can restart position ids per segment and keep
every token's attention inside its own document (exact packing, no cross-document leakage).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

from domaintune.mix.sampling import Segment


@dataclass
class Row:
    segments: list[Segment] = field(default_factory=list)
    used: int = 0


def pack(segments: list[Segment], seq_len: int, seed: int) -> list[Row]:
    """Place each segment (longest first) into the fullest row it still fits in.

    Best-fit decreasing stays within a few percent of optimal fill; rows are shuffled afterwards
    so batch order does not correlate with segment length (and hence with stream).
    """
    rows: list[Row] = []
    free: list[tuple[int, int]] = []  # sorted (free space, row index)
    for seg in sorted(segments, key=lambda s: len(s.ids), reverse=True):
        n = len(seg.ids)
        if n > seq_len:
            raise ValueError(f"segment of {n} tokens exceeds seq_len {seq_len}; chunk it first")
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            space, idx = free.pop(pos)
        else:
            rows.append(Row())
            space, idx = seq_len, len(rows) - 1
        rows[idx].segments.append(seg)
        rows[idx].used += n
        if space - n > 0:
            bisect.insort(free, (space - n, idx))
    random.Random(seed).shuffle(rows)
    return rows


def padding_fraction(rows: list[Row], seq_len: int) -> float:
    """Share of a fixed-length batch that would be padding (0 for perfectly full rows)."""
    if not rows:
        return 0.0
    return 1.0 - sum(r.used for r in rows) / (len(rows) * seq_len)
