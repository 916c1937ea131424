"""`mix.buckets: auto`: the row length chosen from the mixture's segment-length histogram.

Rows of one length are batched together and padded to their longest member, so the row length
decides how much of each row stays empty after packing. `auto` simulates the mix stage's own
best-fit-decreasing packing (packing.py) for a short list of candidate row lengths, starting at
the longest segment rounded up to `step` tokens, and keeps the shortest one whose rows are left
less than `target` empty (the shortest of the emptiest when none reaches it). Short rows keep
memory per row low; a narrow length profile (all documents about N tokens) gets a row that just
fits one or a few of them instead of a fixed 1,024 or 2,048.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from domaintune.packing import pack, unfilled_fraction

STEP = 64  # row lengths are multiples of this (keeps kernels' tiles full)
TARGET = 0.02  # the padding target: < 2 % of the rows empty
SAMPLE = 4096  # segments simulated at most (the choice depends on the histogram, not the count)


@dataclass(frozen=True)
class _Len:
    ids: range


@dataclass(frozen=True)
class AutoBuckets:
    buckets: list[int]
    unfilled: dict[int, float]  # candidate row length -> simulated share of the rows left empty

    def report(self) -> dict:
        return {"chosen": self.buckets, "simulated_unfilled": {str(k): round(v, 4) for k, v in self.unfilled.items()}}


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def candidates(longest: int, max_len: int, step: int = STEP) -> list[int]:
    """16 lengths in `step`s from the longest segment, then doubling, then `max_len` itself."""
    first = min(_round_up(longest, step), max_len)
    out = [first + k * step for k in range(16) if first + k * step <= max_len]
    while out[-1] * 2 <= max_len:
        out.append(out[-1] * 2)
    return sorted(set(out + [max_len]))


def choose_buckets(lengths: list[int], max_len: int, seed: int, target: float = TARGET,
                   step: int = STEP) -> AutoBuckets:
    if not lengths:
        raise ValueError("mix.buckets: auto needs at least one segment to look at")
    if max(lengths) > max_len:
        raise ValueError(f"a segment of {max(lengths)} tokens exceeds mix.seq_len ({max_len})")
    sample = lengths if len(lengths) <= SAMPLE else random.Random(seed).sample(lengths, SAMPLE)
    segments = [_Len(range(n)) for n in sample]
    unfilled = {r: unfilled_fraction(pack(segments, [r], seed)) for r in candidates(max(lengths), max_len, step)}
    good = [r for r, u in unfilled.items() if u < target]
    best = min(good) if good else min(unfilled, key=lambda r: (round(unfilled[r], 4), r))
    return AutoBuckets([best], unfilled)
