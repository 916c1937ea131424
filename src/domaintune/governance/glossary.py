"""A protected glossary: terms that no text transform may alter or split.

It works by masking: before the transforms run, every protected term is swapped for one character
from Unicode's supplementary private use area, which NFKC, whitespace rules, width and OpenCC
conversion all leave alone and which regex `\\w`/`\\b` treat as a non-word character. Afterwards
the terms are put back verbatim. Masking (rather than teaching every transform to skip spans)
keeps the guarantee when someone adds a transform that knows nothing about the glossary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SENTINEL_BASE, SENTINEL_LAST = 0xF0000, 0xFFFFD  # Supplementary Private Use Area-A
_SENTINEL = re.compile("[\U000F0000-\U000FFFFD]")
# Letters/digits, ASCII and full-width: a glossary term only matches as a whole token of these.
_ALNUM = "A-Za-z0-9\uff10-\uff19\uff21-\uff3a\uff41-\uff5a"


def _term_regex(term: str) -> str:
    before = f"(?<![{_ALNUM}])" if re.match(f"[{_ALNUM}]", term[0]) else ""
    after = f"(?![{_ALNUM}])" if re.match(f"[{_ALNUM}]", term[-1]) else ""
    return before + re.escape(term) + after


class Glossary:
    """Finds protected terms (longest first) and masks them with sentinel characters."""

    def __init__(self, terms: Sequence[str]):
        self.terms = sorted(set(terms), key=lambda t: (-len(t), t))
        # Sentinel characters already in the text are masked too, so they come back unchanged.
        alternatives = [_term_regex(t) for t in self.terms] + [_SENTINEL.pattern]
        self.regex = re.compile("|".join(alternatives))

    def mask(self, text: str) -> tuple[str, list[str]]:
        originals: list[str] = []
        index: dict[str, int] = {}

        def swap(m: re.Match) -> str:
            span = m.group(0)
            if span not in index:
                if SENTINEL_BASE + len(originals) > SENTINEL_LAST:
                    return span  # 65,534 distinct terms in one document: the rest go unprotected
                index[span] = len(originals)
                originals.append(span)
            return chr(SENTINEL_BASE + index[span])

        return self.regex.sub(swap, text), originals

    @staticmethod
    def unmask(text: str, originals: list[str]) -> str:
        return _SENTINEL.sub(lambda m: originals[ord(m.group(0)) - SENTINEL_BASE], text)

    @staticmethod
    def damaged(masked: str, transformed: str, originals: list[str]) -> list[str]:
        """The terms whose count changed between the masked text and its transformed form, sorted."""
        before, after = sorted(_SENTINEL.findall(masked)), sorted(_SENTINEL.findall(transformed))
        if before == after:
            return []
        changed = {c for c in set(before) | set(after) if before.count(c) != after.count(c)}
        return sorted({_original(originals, c) for c in changed})


def _original(originals: list[str], sentinel: str) -> str:
    i = ord(sentinel) - SENTINEL_BASE
    return originals[i] if i < len(originals) else f"U+{ord(sentinel):X}"
