"""Text normalization: Unicode form and whitespace layout.

NFKC folds full-width ASCII (common in Chinese text) and compatibility forms, so the same
word is one token sequence whichever keyboard typed it. Whitespace rules keep leading
indentation on purpose: flattening it would break code blocks, nested lists and Python.
"""

from __future__ import annotations

import re
import unicodedata

from domaintune.data.steps import TextStep

_LINE_BREAKS = re.compile(r"\r\n?")
_TRAILING = re.compile(r"[^\S\n]+$", re.MULTILINE)
_INNER_RUNS = re.compile(r"(?<=\S)[^\S\n]+")  # a run after a visible char: not indentation
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_unicode(text: str, form: str) -> str:
    if form == "none" or unicodedata.is_normalized(form, text):
        return text
    return unicodedata.normalize(form, text)


def normalize_whitespace(text: str) -> str:
    """Unix line breaks; one space for inner runs of spaces/tabs; no trailing spaces; at most
    one blank line in a row; no leading/trailing blank space around the document."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _TRAILING.sub("", text)
    text = _INNER_RUNS.sub(" ", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


class NormalizeUnicode(TextStep):
    name = "normalize.unicode"

    def __init__(self, form: str):
        self.form = form

    def transform(self, text: str) -> str:
        return normalize_unicode(text, self.form)


class NormalizeWhitespace(TextStep):
    name = "normalize.whitespace"

    def transform(self, text: str) -> str:
        return normalize_whitespace(text)
