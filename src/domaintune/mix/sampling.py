"""Token-level mixture sampling: each stream contributes its declared share of the token budget.

Shares are measured in tokens, not documents, because streams differ wildly in document
length; a document-level ratio would silently over-weight long-document streams.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from domaintune.mix.boundaries import split_pieces


@dataclass
class Segment:
    """A run of tokens from one document, packed as a unit (position ids restart at its start)."""

    ids: list[int]
    stream: int
    doc_id: str
    piece: int = 0  # index of this piece within its document (0 if the document was not split)
    cut: str = "end"  # where the piece ends: end | paragraph | sentence | hard


@dataclass(frozen=True)
class Doc:
    doc_id: str
    ids: list[int]
    boundaries: dict[int, str] = field(default_factory=dict)  # token index -> boundary kind


@dataclass
class StreamDraw:
    segments: list[Segment] = field(default_factory=list)
    tokens: int = 0
    epochs: int = 0  # how many passes over the stream's documents were started
    exhausted: bool = False  # ran out before reaching its target (max_repeats reached)


def token_targets(weights: dict[str, float], budget: int) -> dict[str, int]:
    """Split `budget` tokens by weight; rounding remainders go to the largest weights."""
    total = sum(weights.values())
    raw = {k: budget * w / total for k, w in weights.items()}
    targets = {k: int(v) for k, v in raw.items()}
    leftover = budget - sum(targets.values())
    for k in sorted(raw, key=lambda k: raw[k] - targets[k], reverse=True)[:leftover]:
        targets[k] += 1
    return targets


def draw_stream(docs: list[Doc], stream: int, target: int, max_len: int,
                max_repeats: int, seed: int, min_piece: int = 8) -> StreamDraw:
    """Take documents (shuffled per epoch by `seed`) until `target` tokens; the last piece is
    trimmed so the stream's share is exact."""
    draw = StreamDraw()
    while draw.tokens < target:
        if draw.epochs >= max_repeats or not docs:
            draw.exhausted = True
            break
        order = list(range(len(docs)))
        random.Random(f"{seed}:{stream}:{draw.epochs}").shuffle(order)
        draw.epochs += 1
        for i in order:
            doc = docs[i]
            for k, p in enumerate(split_pieces(len(doc.ids), doc.boundaries, max_len)):
                room = target - draw.tokens
                if room < min_piece:  # too small to be worth a segment; stop here
                    return draw
                ids = doc.ids[p.start:min(p.end, p.start + room)]
                draw.segments.append(Segment(ids, stream, doc.doc_id, k, p.cut if len(ids) == p.end - p.start
                                             else "budget"))
                draw.tokens += len(ids)
    return draw
