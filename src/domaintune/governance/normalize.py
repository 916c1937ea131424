"""Text normalization: Unicode form, whitespace layout, width, Chinese script and regex rewrites,
as named text transforms that a `Normalizer` runs in order (with glossary terms protected).

NFKC folds full-width ASCII (common in Chinese text) and compatibility forms, so the same
word is one token sequence whichever keyboard typed it. Whitespace rules keep leading
indentation on purpose: flattening it would break code blocks, nested lists and Python.

    steps = transforms(unicode="NFKC", whitespace=True, rewrites=rules.rewrites)
    out = Normalizer(steps, Glossary(rules.glossary))(text)   # out.text, out.changed, out.damaged

Transform names ("normalize.unicode", "rules.rewrite", ...) are the lineage names the data stage
records, so keep them stable.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from domaintune.extras import require
from domaintune.governance.glossary import Glossary
from domaintune.governance.langid import identify
from domaintune.governance.rules import RewriteRule

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"


class Transform(Protocol):
    name: str

    def transform(self, text: str) -> str: ...


# --------------------------------------------------------------------------- unicode, whitespace
def normalize_unicode(text: str, form: str) -> str:
    if form == "none" or unicodedata.is_normalized(form, text):
        return text
    return unicodedata.normalize(form, text)


def normalize_whitespace(text: str) -> str:
    """Unix line breaks; inner runs of blanks become one space (indentation is kept); no
    trailing blanks; at most one blank line in a row; the document itself is stripped.

    Line by line with str methods rather than regexes: about 6x faster on typical text."""
    lines: list[str] = []
    pending_blank = False
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        body = line.rstrip()
        if not body:
            pending_blank = bool(lines)  # blank lines before the first text are dropped
            continue
        if pending_blank:
            lines.append("")
            pending_blank = False
        content = body.lstrip()
        indent = body[: len(body) - len(content)]
        lines.append(indent + " ".join(content.split()))
    return "\n".join(lines).strip()


class NormalizeUnicode:
    name = "normalize.unicode"

    def __init__(self, form: str):
        self.form = form

    def transform(self, text: str) -> str:
        return normalize_unicode(text, self.form)


class NormalizeWhitespace:
    name = "normalize.whitespace"

    def transform(self, text: str) -> str:
        return normalize_whitespace(text)


# --------------------------------------------------------------------------- width, zh
_HALF = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
# Chinese typesetting uses full-width punctuation; only ASCII marks that follow a Chinese
# character are converted, so English, numbers ("3.5") and URLs are untouched.
_FULL_AFTER_CJK = re.compile(f"(?<=[{_CJK}])([,!?:;]|\\.(?=\\s|$))")
_FULL = {",": "，", "!": "！", "?": "？", ":": "：", ";": "；", ".": "。"}


def to_half_width(text: str) -> str:
    return text.translate(_HALF)


def to_full_width_punct(text: str) -> str:
    return _FULL_AFTER_CJK.sub(lambda m: _FULL[m.group(1)], text)


class Width:
    name = "normalize.width"

    def __init__(self, mode: str):
        self.convert = to_half_width if mode == "half" else to_full_width_punct

    def transform(self, text: str) -> str:
        return self.convert(text)


@lru_cache(maxsize=2)
def _opencc(mode: str):
    opencc = require("opencc", "zh", f"data.normalize.chinese={mode}")
    return opencc.OpenCC(f"{mode}.json")


class ChineseScript:
    name = "normalize.chinese"

    def __init__(self, mode: str):
        self.converter = _opencc(mode)

    def transform(self, text: str) -> str:
        return self.converter.convert(text)


# --------------------------------------------------------------------------- rewrites
class Rewrite:
    """Regex rewrite rules in file order; a rule with `lang` only touches documents of that language."""

    name = "rules.rewrite"

    def __init__(self, rules: Sequence[RewriteRule]):
        self.rules = [(re.compile(r.pattern, re.IGNORECASE if r.ignore_case else 0), r.replace, r.lang)
                      for r in rules]

    def transform(self, text: str) -> str:
        lang = None
        for rx, replace, want in self.rules:
            if want is not None:
                lang = lang or identify(text).code
                if lang != want:
                    continue
            text = rx.sub(replace, text)
        return text


def transforms(unicode: str = "NFKC", whitespace: bool = True, width: str = "none", chinese: str = "none",
               rewrites: Sequence[RewriteRule] = ()) -> list[Transform]:
    """The transforms in their fixed order: unicode form, whitespace, width, Chinese script, rewrites
    ("none" / False / no rules leaves a transform out)."""
    steps: list[Transform] = []
    if unicode != "none":
        steps.append(NormalizeUnicode(unicode))
    if whitespace:
        steps.append(NormalizeWhitespace())
    if width != "none":
        steps.append(Width(width))
    if chinese != "none":
        steps.append(ChineseScript(chinese))
    if rewrites:
        steps.append(Rewrite(rewrites))
    return steps


# --------------------------------------------------------------------------- normalizer
@dataclass(frozen=True)
class Normalized:
    text: str  # the normalized text; the input unchanged when `damaged` is not empty
    changed: list[str]  # names of the transforms that changed the text, in order
    damaged: list[str]  # protected terms a transform deleted or repeated, sorted


class Normalizer:
    """Runs transforms in order with the glossary terms masked, so no transform can alter or split
    them; a transform that deletes or repeats a term (a too-greedy rewrite rule) is reported in
    `damaged` and the text is left as it was rather than silently damaged."""

    def __init__(self, steps: Sequence[Transform], glossary: Glossary | None = None):
        self.steps, self.glossary = list(steps), glossary

    def __call__(self, text: str) -> Normalized:
        masked, originals = self.glossary.mask(text) if self.glossary else (text, [])
        current, changed = masked, []
        for step in self.steps:
            new = step.transform(current)
            if new != current:
                current = new
                changed.append(step.name)
        if self.glossary is None:
            return Normalized(current, changed, [])
        damaged = self.glossary.damaged(masked, current, originals)
        if damaged:
            return Normalized(text, changed, damaged)
        return Normalized(self.glossary.unmask(current, originals), changed, [])
