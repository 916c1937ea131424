"""Domain-aware normalization: width and simplified/traditional conversion, regex rewrite rules,
and a protected glossary that no text step may alter or split.

The glossary works by masking: before the text steps run, every protected term in the record is
swapped for one character from Unicode's supplementary private use area, which NFKC, whitespace
rules, width and OpenCC conversion all leave alone and which regex `\\w`/`\\b` treat as a
non-word character. After the steps the terms are put back verbatim. Masking (rather than teaching
every step to skip spans) keeps the guarantee when someone adds a step that knows nothing about
the glossary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domaintune.config import DataConfig
from domaintune.config.load import load_yaml_model
from domaintune.data.langid import identify
from domaintune.data.normalize import NormalizeUnicode, NormalizeWhitespace
from domaintune.data.records import Record, Reject
from domaintune.data.steps import Step, TextStep
from domaintune.errors import ConfigError

SENTINEL_BASE, SENTINEL_LAST = 0xF0000, 0xFFFFD  # Supplementary Private Use Area-A
_SENTINEL = re.compile("[\U000F0000-\U000FFFFD]")
# Letters/digits, ASCII and full-width: a glossary term only matches as a whole token of these.
_ALNUM = "A-Za-z0-9\uff10-\uff19\uff21-\uff3a\uff41-\uff5a"
_CJK = "\u3400-\u4dbf\u4e00-\u9fff"


# --------------------------------------------------------------------------- rules file
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewriteRule(_Strict):
    pattern: str = Field(description="Python regex.")
    replace: str = Field(description="Replacement; \\1 and \\g<name> refer to groups.")
    lang: str | None = Field(None, description="Apply only to documents identified as this language.")
    ignore_case: bool = False


class RulesFile(_Strict):
    width: Literal["none", "half", "full"] | None = None
    chinese: Literal["none", "t2s", "s2t"] | None = None
    glossary: list[str] = Field(default_factory=list)
    rewrites: list[RewriteRule] = Field(default_factory=list)


def load_rules(path: str | Path) -> RulesFile:
    path = Path(path)
    rules = load_yaml_model(path, RulesFile, key="data.rules_file")
    problems = [f"glossary[{i}]: empty term" for i, t in enumerate(rules.glossary) if not t]
    for i, rule in enumerate(rules.rewrites):
        try:
            re.compile(rule.pattern)
        except re.error as exc:
            problems.append(f"rewrites[{i}].pattern {rule.pattern!r}: {exc}")
    if problems:
        raise ConfigError(problems, source=str(path))
    return rules


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


class Width(TextStep):
    name = "normalize.width"

    def __init__(self, mode: str):
        self.convert = to_half_width if mode == "half" else to_full_width_punct

    def transform(self, text: str) -> str:
        return self.convert(text)


@lru_cache(maxsize=2)
def _opencc(mode: str):
    try:
        import opencc
    except ImportError:
        raise ConfigError([f"data.normalize.chinese={mode} needs the OpenCC package: pip install opencc"]) from None
    return opencc.OpenCC(f"{mode}.json")


class ChineseScript(TextStep):
    name = "normalize.chinese"

    def __init__(self, mode: str):
        self.converter = _opencc(mode)

    def transform(self, text: str) -> str:
        return self.converter.convert(text)


# --------------------------------------------------------------------------- rewrites
class Rewrite(TextStep):
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


# --------------------------------------------------------------------------- glossary
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


class Protected:
    """Runs text steps with the glossary terms masked; a step that deletes or duplicates a
    protected term (a too-greedy rewrite rule) gets the record rejected, not silently damaged."""

    name = "rules.glossary"

    def __init__(self, glossary: Glossary, steps: Sequence[TextStep]):
        self.glossary, self.steps = glossary, list(steps)

    def __call__(self, rec: Record) -> Record | Reject:
        original = rec.text
        masked, originals = self.glossary.mask(original)
        rec.text = masked
        for step in self.steps:
            rec = step(rec)
        before, after = sorted(_SENTINEL.findall(masked)), sorted(_SENTINEL.findall(rec.text))
        if before != after:
            lost = {_original(originals, c) for c in _changed(before, after)}
            touched = [s for s in rec.steps if s in {st.name for st in self.steps}]
            rec.text = original
            return Reject.of(rec, "rules.glossary_damaged",
                             f"step(s) {touched} deleted or repeated protected term(s) {sorted(lost)}; "
                             "fix the rewrite rule in data.rules_file that matches across them")
        rec.text = self.glossary.unmask(rec.text, originals)
        return rec


def _changed(before: list[str], after: list[str]) -> set[str]:
    return {c for c in set(before) | set(after) if before.count(c) != after.count(c)}


def _original(originals: list[str], sentinel: str) -> str:
    i = ord(sentinel) - SENTINEL_BASE
    return originals[i] if i < len(originals) else f"U+{ord(sentinel):X}"


# --------------------------------------------------------------------------- composition
def _option(data: DataConfig, rules: RulesFile | None, key: str) -> str:
    configured = getattr(data.normalize, key)
    from_file = getattr(rules, key, None) if rules else None
    if from_file in (None, "none") or from_file == configured:
        return configured
    if configured != "none":
        raise ConfigError([f"data.normalize.{key}={configured} conflicts with {key}: {from_file} in "
                           f"{data.rules_file}; set it in one place"])
    return from_file


def text_steps(data: DataConfig) -> list[Step]:
    """Normalization in order: unicode form, whitespace, width, Chinese script, rewrite rules;
    wrapped in glossary protection when the rules file lists protected terms."""
    rules = load_rules(data.rules_file) if data.rules_file else None
    steps: list[TextStep] = []
    if data.normalize.unicode != "none":
        steps.append(NormalizeUnicode(data.normalize.unicode))
    if data.normalize.whitespace:
        steps.append(NormalizeWhitespace())
    if (width := _option(data, rules, "width")) != "none":
        steps.append(Width(width))
    if (chinese := _option(data, rules, "chinese")) != "none":
        steps.append(ChineseScript(chinese))
    if rules and rules.rewrites:
        steps.append(Rewrite(rules.rewrites))
    if rules and rules.glossary:
        return [Protected(Glossary(rules.glossary), steps)]
    return list(steps)
