"""Split a document into chunks at sentence and paragraph boundaries (English and Chinese), sized in
the serving model's tokens, with whole-sentence overlap. Every chunk is an exact slice of the
document text, so its character offsets make a citation point at the very words that were used."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# A sentence ends at Chinese full-width punctuation (no space follows it), at ASCII punctuation
# followed by whitespace, or at a line break; closing quotes/brackets stay with their sentence.
_SENTENCE_END = re.compile(r"[。！？；…]+[”’」』）\)]*|[.!?;]+[\"'”’)\]]*(?=\s|$)|\n")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tokens: int
    paragraph: int  # index of the paragraph the sentence belongs to


def _paragraphs(text: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for m in _PARAGRAPH.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    out, pos = [], start
    for m in _SENTENCE_END.finditer(text, start, end):
        out.append((pos, m.end()))
        pos = m.end()
    out.append((pos, end))
    trimmed = []
    for a, b in out:  # drop surrounding whitespace so offsets cover text, not gaps
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            trimmed.append((a, b))
    return trimmed


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence of `text`, paragraph by paragraph (what answers cut sources to)."""
    return [s for pa, pb in _paragraphs(text) for s in _sentences(text, pa, pb)]


def _split_long(text: str, a: int, b: int, count: TokenCounter, max_tokens: int) -> list[tuple[int, int]]:
    """A sentence longer than the budget: cut it into windows of whole words (or characters for
    Chinese) that each fit, by shrinking a proportional guess until it does."""
    pieces = []
    while a < b:
        n = count(text[a:b])
        if n <= max_tokens:
            pieces.append((a, b))
            break
        cut = a + max(1, (b - a) * max_tokens // n)
        while cut > a + 1 and count(text[a:cut]) > max_tokens:
            cut = a + max(1, (cut - a) * 9 // 10)
        space = text.rfind(" ", a + 1, cut)
        cut = space if space > a + (cut - a) // 2 else cut
        pieces.append((a, cut))
        a = cut
        while a < b and text[a].isspace():
            a += 1
    return pieces


def spans(text: str, count: TokenCounter, max_tokens: int) -> list[Span]:
    """Sentence spans of `text`, each at most `max_tokens` long, with their paragraph index."""
    out = []
    for p, (pa, pb) in enumerate(_paragraphs(text)):
        for a, b in _sentences(text, pa, pb):
            for sa, sb in _split_long(text, a, b, count, max_tokens):
                out.append(Span(sa, sb, count(text[sa:sb]), p))
    return out


def chunk_spans(text: str, count: TokenCounter, max_tokens: int, overlap_tokens: int) -> list[tuple[int, int]]:
    """(start, end) character ranges of the chunks of `text`.

    Sentences are packed greedily. A chunk ends early at a paragraph boundary once it is half full,
    so paragraphs are not glued to fragments of the next. The next chunk starts with the previous
    chunk's last whole sentences, up to `overlap_tokens`."""
    sents = spans(text, count, max_tokens)
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(sents):
        j, used = i, 0
        while j < len(sents) and used + sents[j].tokens <= max_tokens:
            if j > i and sents[j].paragraph != sents[j - 1].paragraph and used >= max_tokens // 2:
                break
            used += sents[j].tokens
            j += 1
        j = max(j, i + 1)
        chunks.append((sents[i].start, sents[j - 1].end))
        if j >= len(sents):
            break
        back, kept = j, 0
        while back - 1 > i and kept + sents[back - 1].tokens <= overlap_tokens:
            back -= 1
            kept += sents[back].tokens
        i = back
    return chunks
