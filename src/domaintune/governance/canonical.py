"""The canonical form of a text for near-duplicate signatures: the same words, whatever format they
were exported in.

One text exported as plain text, as Markdown with a heading, as an HTML page (main content) and as
a chat transcript ("agent: ..." lines) differs in markup, speaker labels, headings and line breaks,
and each of those shifts the word shingles that MinHash compares: enough, on a few hundred words,
to fall below a 0.8 Jaccard threshold. `canonical(text)` removes them; only the signature and the
Jaccard confirmation see it, the kept text stays as it was.

What is removed, on every text alike (so two plain-prose copies compare exactly as before):
- markup: HTML tags and entities, Markdown heading/quote/list/table markers, emphasis, code
  ticks, links (`[text](url)` keeps the text);
- speaker labels: a short "Name:" / "客服：" (letters only) at the start of a line, in a text where
  at least MIN_LABELLED_LINES lines carry one (a transcript);
- headings: Markdown `#` lines and setext underlines, and heading-like lines (at most
  HEADING_TOKENS tokens, no sentence-ending punctuation, no speaker label) — unless dropping them
  would leave less than MIN_BODY_TOKENS tokens (a list, a table, a short note keeps its lines);
- line breaks and runs of whitespace: the lines are joined with single spaces.
A line break in the middle of a word (a transcript turn cut mid-word) still splits the word in two:
no rule can tell "iss|ued" from "is|sued" without a vocabulary. It costs a few shingles, which a
document of ordinary length absorbs well within the threshold.
"""

from __future__ import annotations

import html
import re

HEADING_TOKENS = 8
MIN_BODY_TOKENS = 15
_TAG = re.compile(r"<[^>\n]{1,400}>")
_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_SETEXT = re.compile(r"^\s{0,3}(?:=+|-+)\s*$")
_LINE_MARKERS = re.compile(r"^\s*(?:>\s*)*(?:#{1,6}\s+|[-*+•]\s+|\d{1,3}[.)]\s+)?")
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|`+|~~)")
_TABLE = re.compile(r"^\s*\|?(?:\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*$|\|")
# "agent:", "Customer Service:", "客服：", "[10:32] Li Wei:": a name or role (letters, no digits: "Step 2:"
# and "doc 7:" tell documents apart), short, at the start of a line
_SPEAKER = re.compile(r"^\s*(?:\[[\d:. -]{3,20}\]\s*)?[^\W\d_](?:[^\W\d_]|[ .'-]){0,23}(?::\s+|：\s*)")
MIN_LABELLED_LINES = 2  # one "Note: ..." line is part of a text; a transcript labels line after line
_TOKENS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w+")


_MARKER_START = frozenset(">#-*+•")
_END_CHARS = frozenset(".!?;:,。！？；：，、…\"'”’)）")


def _clean_line(line: str, transcript: bool) -> tuple[str, bool]:
    """(the line without markup and, in a transcript, its speaker label; whether it had one).

    Each substitution runs only on a line holding the character its pattern needs (most prose lines
    hold none: the canonical form ran on every record and was a fifth of the signature cost)."""
    if "<" in line:
        line = _TAG.sub(" ", line)
    if "](" in line:
        line = _MD_LINK.sub(r"\1", line)
    stripped = line.lstrip()  # what _LINE_MARKERS removes when no marker follows (\s is isspace)
    first = stripped[:1]
    line = _LINE_MARKERS.sub("", line, count=1) if first in _MARKER_START or first.isdecimal() else stripped
    unlabelled = _SPEAKER.sub("", line, count=1) if transcript else line
    clean = unlabelled
    if "*" in clean or "_" in clean or "`" in clean or "~" in clean:
        clean = _EMPHASIS.sub("", clean)
    if "|" in clean:
        clean = _TABLE.sub(" ", clean)
    return clean.strip(), unlabelled != line


def _is_heading(raw: str, clean: str, labelled: bool) -> bool:
    if _MD_HEADING.match(raw):
        return True
    # a speaker's turn is never a heading, however short ("agent: one moment"). `clean` is stripped,
    # so ending in punctuation is its last character; tokens are counted only when that is not it.
    return not labelled and clean[-1:] not in _END_CHARS and len(_TOKENS.findall(clean)) <= HEADING_TOKENS


def _at_least(lines: list[str], tokens: int) -> bool:
    count = 0
    for line in lines:
        for _ in _TOKENS.finditer(line):
            count += 1
            if count >= tokens:
                return True
    return False


def canonical(text: str) -> str:
    """The text without markup, speaker labels, headings and line structure (see the module doc)."""
    raw_lines = [raw for raw in html.unescape(text).splitlines() if not _SETEXT.match(raw)]
    transcript = sum(1 for raw in raw_lines if _SPEAKER.match(raw)) >= MIN_LABELLED_LINES
    lines = [(raw, *_clean_line(raw, transcript)) for raw in raw_lines]
    lines = [(raw, clean, labelled) for raw, clean, labelled in lines if clean]
    body = [clean for raw, clean, labelled in lines if not _is_heading(raw, clean, labelled)]
    if not _at_least(body, MIN_BODY_TOKENS):
        body = [clean for _, clean, _ in lines]
    return " ".join(" ".join(body).split())
