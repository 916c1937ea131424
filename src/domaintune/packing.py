"""Best-fit-decreasing packing of segments into rows whose lengths are the configured buckets.

Rows carry segment boundaries, so training can restart position ids per segment and keep
every token's attention inside its own document (exact packing, no cross-document leakage).
A core module: the mix stage packs documents with it, the SFT stage conversations.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    capacity: int  # the length bucket this row belongs to
    segments: list[Any] = field(default_factory=list)  # anything with token `ids`
    used: int = 0


def bucket_for(n: int, buckets: list[int]) -> int:
    """The smallest bucket that fits `n` tokens."""
    pos = bisect.bisect_left(buckets, n)
    if pos == len(buckets):
        raise ValueError(f"segment of {n} tokens exceeds the largest bucket {buckets[-1]}; split it first")
    return buckets[pos]


def pack(segments: list[Any], buckets: list[int], seed: int) -> list[Row]:
    """Best-fit decreasing over length buckets.

    Segments go longest first; each goes into the fullest existing row it still fits in (of any
    bucket), else opens a row of the smallest bucket that fits it. Long documents thus live in
    long rows, short ones fill the gaps, and rows end up nearly full. Rows are shuffled
    afterwards so row order does not correlate with length (and hence with stream).
    """
    buckets = sorted(buckets)
    rows: list[Row] = []
    free: list[tuple[int, int]] = []  # sorted (free space, row index)
    for seg in sorted(segments, key=lambda s: len(s.ids), reverse=True):
        n = len(seg.ids)
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            space, idx = free.pop(pos)
        else:
            rows.append(Row(bucket_for(n, buckets)))
            space, idx = rows[-1].capacity, len(rows) - 1
        rows[idx].segments.append(seg)
        rows[idx].used += n
        if space - n > 0:
            bisect.insort(free, (space - n, idx))
    random.Random(seed).shuffle(rows)
    return rows


def unfilled_fraction(rows: list[Row]) -> float:
    """Share of the rows' bucket lengths left empty (batches pad only to their longest row)."""
    if not rows:
        return 0.0
    return 1.0 - sum(r.used for r in rows) / sum(r.capacity for r in rows)
