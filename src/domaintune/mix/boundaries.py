"""Split over-long documents at paragraph or sentence boundaries instead of mid-sentence.

Cut candidates come from the tokenizer's character offsets: a token that starts after a
paragraph break or right after sentence-final punctuation (Latin or CJK) is a clean place to
start a new piece. Only when a stretch has no boundary at all do we cut hard at the limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PARAGRAPH = re.compile(r"\n[ \t]*\n\s*$")
SENTENCE_END = re.compile(r"([.!?。！？；;…]['\"”’」』)）]*|\n)\s*$")


@dataclass(frozen=True)
class Piece:
    start: int  # token offsets into the document's ids
    end: int
    cut: str  # how this piece ends: "end" | "paragraph" | "sentence" | "hard"


def boundary_tokens(text: str, offsets: list[tuple[int, int]]) -> dict[int, str]:
    """Token index -> boundary kind, for tokens that may start a new piece."""
    kinds = {}
    for i in range(1, len(offsets)):
        start = offsets[i][0]
        if start < offsets[i - 1][1] or start == offsets[i - 1][0]:
            continue  # byte-level BPE splits one character over several tokens: never cut inside
        head = text[max(0, start - 16):start]
        if PARAGRAPH.search(head):
            kinds[i] = "paragraph"
        elif SENTENCE_END.search(head):
            kinds[i] = "sentence"
    return kinds


def split_pieces(n_tokens: int, boundaries: dict[int, str], max_len: int) -> list[Piece]:
    """Greedy: each piece is as long as possible (<= max_len) and ends at the best boundary,
    preferring a paragraph break when one lies in the last half of the window."""
    pieces, start = [], 0
    while n_tokens - start > max_len:
        limit = start + max_len
        inside = [i for i in boundaries if start < i <= limit]
        paragraphs = [i for i in inside if boundaries[i] == "paragraph" and i - start >= max_len // 2]
        if paragraphs:
            cut, kind = max(paragraphs), "paragraph"
        elif inside:
            cut = max(inside)
            kind = boundaries[cut]
        else:
            cut, kind = limit, "hard"
        pieces.append(Piece(start, cut, kind))
        start = cut
    pieces.append(Piece(start, n_tokens, "end"))
    return pieces
