"""Quality filters: each rejects with a reason `quality.<name>` and a detail giving the measured
value, the threshold and the config key to change. Thresholds come from `data.quality`.

Ratios are over non-space characters and words are Latin words or single Chinese characters, so
one threshold works for English and Chinese alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from domaintune.config import QualityConfig
from domaintune.data.records import Record, Reject
from domaintune.errors import ConfigError
from domaintune.governance.langid import identify
from domaintune.registry import import_target

BOILERPLATE_FILE = Path(__file__).with_name("quality_boilerplate.yaml")
_WORDS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W_]+", re.UNICODE)


def words(text: str) -> list[str]:
    """Latin (or other alphabet) words, and each Chinese character as a word of its own."""
    return _WORDS.findall(text)


_SPACE = re.compile(r"\s+")  # \s in a str pattern is exactly str.isspace()
_SYMBOL_RUN = re.compile(r"([^\w]|_)\1+")  # a run of one repeated non-alphanumeric character (\w: isalnum or _)


def char_ratios(text: str) -> tuple[float, float]:
    """(symbol ratio, digit ratio) over the non-space characters. A run of one repeated symbol
    counts once (spaces between its characters too): table rules and underlines (+-----+, =====)
    are layout, not noise."""
    # Whole-string operations in C, then one look per *distinct* character: the per-character loop
    # this replaces was the costliest quality check (profiled: about a third of the filter's time).
    kept = _SYMBOL_RUN.sub(r"\1", _SPACE.sub("", text))
    if not kept:
        return 0.0, 0.0
    digits = symbols = 0
    for ch, n in Counter(kept).items():
        if ch.isdigit():
            digits += n
        elif unicodedata.category(ch)[0] in "PS":
            symbols += n
    return symbols / len(kept), digits / len(kept)


def repeated_line_share(text: str) -> float:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return 1 - len(set(lines)) / len(lines) if lines else 0.0


def repeated_ngram_share(tokens: list[str], n: int) -> float:
    """Share of words covered by a word n-gram that occurs more than once (Gopher's dup n-grams)."""
    if len(tokens) < n:
        return 0.0
    # n-grams built by zip (in C) and the coverage by a prefix sum: the per-gram slice-and-mark
    # loop this replaces was the filter's second cost (profiled); the result is the same.
    grams = list(zip(*[tokens[i:] for i in range(n)]))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0.0
    repeated = np.fromiter((counts[g] > 1 for g in grams), dtype=bool, count=len(grams))
    seen = np.concatenate(([0], np.cumsum(repeated)))  # seen[i]: repeated n-grams starting before i
    word = np.arange(len(tokens))
    # word i is covered when one of the n-grams starting at i-n+1 .. i repeats
    covered = seen[np.minimum(word + 1, len(grams))] - seen[np.maximum(word - n + 1, 0)] > 0
    return int(np.count_nonzero(covered)) / len(tokens)


@lru_cache(maxsize=1)
def _boilerplate_patterns() -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    patterns = yaml.safe_load(BOILERPLATE_FILE.read_text(encoding="utf-8"))["patterns"]
    return tuple((p, literal_gates(p)) for p in patterns)


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


def _boilerplate() -> re.Pattern:
    return _compiled(tuple(p for p, _ in _boilerplate_patterns()))


_LEAD = re.compile(r"(?:\\b|\^|\\s\*)*")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 ")


def literal_gates(pattern: str) -> tuple[str, ...] | None:
    """Lower-case strings one of which every match of `pattern` contains (its possible leading
    literals, after \\b / ^ / \\s*), or None when they cannot be read off the pattern simply.
    "\\b(privacy policy|terms of (use|service))\\b" -> ("privacy policy", "terms of ")."""
    if _top_level_bar(pattern):
        return None  # "a|b": a match need not contain the first branch's literal
    rest = pattern[_LEAD.match(pattern).end():]
    if rest.startswith("("):
        depth, end = 0, None
        for i, ch in enumerate(rest):
            if ch in "\\[":
                return None  # escapes and classes inside the group: not read here
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = i
                break
        if end is None or rest[1:2] == "?" or rest[end + 1:end + 2] in ("?", "*", "{"):
            return None  # (?...) groups, or an optional group
        gates: list[str] = []
        depth, start = 0, 1
        for i, ch in enumerate(rest[1:end + 1], start=1):  # split the top-level alternatives
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if (ch == "|" and depth == 0) or i == end:
                gate = _leading_literal(rest[start:i])
                if gate is None:
                    return None
                gates.append(gate)
                start = i + 1
        return tuple(gates)
    gate = _leading_literal(rest)
    return None if gate is None else (gate,)


def _top_level_bar(pattern: str) -> bool:
    depth, in_class, escaped = 0, False, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch in "()":
            depth += 1 if ch == "(" else -1
        elif ch == "|" and depth == 0:
            return True
    return False


def _literal_char(ch: str) -> bool:
    # ASCII: lower-case letters, digits, space (no regex meaning). Non-ASCII: uncased characters only
    # (CJK): a cased one may match an ASCII letter under IGNORECASE (the Kelvin sign, the long s).
    return ch in _PLAIN if ch.isascii() else ch.lower() == ch.upper()


def _leading_literal(alternative: str) -> str | None:
    end = 0
    while end < len(alternative) and _literal_char(alternative[end]):
        end += 1
    literal = alternative[:end]
    if alternative[end:end + 1] in ("?", "*", "{"):
        literal = literal[:-1]  # the last character is optional
    return literal or None


def boilerplate_line_share(text: str) -> float:
    lines = sum(1 for line in text.split("\n") if line.strip())
    if not lines:
        return 0.0
    pattern = _boilerplate()
    if text.isascii():
        # Cheap exact prefilter (profiled: the alternation was the filter's costliest scan): a pattern
        # whose every match starts with one of its literals cannot match a text that lacks them all.
        # ASCII only: there, IGNORECASE matching is exactly equality after str.lower().
        low = text.lower()
        live = tuple(p for p, gates in _boilerplate_patterns() if gates is None or any(g in low for g in gates))
        if not live:
            return 0.0
        pattern = _compiled(live)
    # One scan of the whole text (matches are rare); a line counts once however many match in it.
    hit_lines = {text.rfind("\n", 0, m.start()) for m in pattern.finditer(text)}
    return len(hit_lines) / lines


def load_scorer(target: str) -> Callable[[str], float]:
    """Resolve `data.quality.scorer` ("module:attr"); a class is instantiated once."""
    try:
        obj = import_target(target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError([f"data.quality.scorer: cannot import '{target}' ({exc}); write 'package.module:attr' "
                           "naming a callable text -> score"]) from None
    scorer = obj() if isinstance(obj, type) else obj
    if not callable(scorer):
        raise ConfigError([f"data.quality.scorer: '{target}' is a {type(scorer).__name__}, not a callable"])
    return scorer


def _too_high(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


class QualityFilter:
    """All configured quality checks in one step, cheapest first; the first failure rejects."""

    name = "filter.quality"

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.scorer = load_scorer(cfg.scorer) if cfg.scorer else None
        self._last: tuple[str, list[str]] | None = None

    def _words(self, text: str) -> list[str]:
        """words(text), computed once per record (two checks use it)."""
        if self._last is None or self._last[0] is not text:
            self._last = (text, words(text))
        return self._last[1]

    def __call__(self, rec: Record) -> Record | Reject:
        for check in (self._length, self._ratios, self._repetition, self._boilerplate, self._language,
                      self._score):
            failure = check(rec.text)
            if failure:
                reason, detail = failure
                self._last = None
                return Reject.of(rec, f"quality.{reason}", detail)
        self._last = None  # hold no text between records
        return rec

    def _fail(self, reason: str, measured: str, key: str, limit: object, fix: str) -> tuple[str, str]:
        return reason, f"{measured}, limit data.quality.{key}={limit}; {fix}"

    def _length(self, text: str) -> tuple[str, str] | None:
        c = self.cfg
        if c.max_chars is not None and len(text) > c.max_chars:
            return self._fail("max_chars", f"{len(text)} chars", "max_chars", c.max_chars,
                              "raise it (or null) to keep long documents")
        n = len(self._words(text))
        if c.min_words is not None and n < c.min_words:
            return self._fail("min_words", f"{n} words", "min_words", c.min_words, "lower it to keep such documents")
        return None

    def _ratios(self, text: str) -> tuple[str, str] | None:
        c = self.cfg
        symbols, digits = char_ratios(text)
        if _too_high(symbols, c.max_symbol_ratio):
            return self._fail("symbol_ratio", f"symbol ratio {symbols:.3f}", "max_symbol_ratio",
                              c.max_symbol_ratio, "raise it for code- or table-heavy data")
        if _too_high(digits, c.max_digit_ratio):
            return self._fail("digit_ratio", f"digit ratio {digits:.3f}", "max_digit_ratio", c.max_digit_ratio,
                              "raise it for number-heavy data (tables, statements)")
        return None

    def _repetition(self, text: str) -> tuple[str, str] | None:
        c = self.cfg
        lines = repeated_line_share(text)
        if _too_high(lines, c.max_repeated_lines):
            return self._fail("repeated_lines", f"{lines:.3f} of lines repeat an earlier line",
                              "max_repeated_lines", c.max_repeated_lines, "raise it to keep repetitive documents")
        if c.max_repeated_ngrams is not None:
            share = repeated_ngram_share(self._words(text), c.ngram_size)
            if share > c.max_repeated_ngrams:
                return self._fail("repeated_ngrams", f"{share:.3f} of words are in a repeated {c.ngram_size}-gram",
                                  "max_repeated_ngrams", c.max_repeated_ngrams, "raise it or change ngram_size")
        return None

    def _boilerplate(self, text: str) -> tuple[str, str] | None:
        limit = self.cfg.max_boilerplate_lines
        share = boilerplate_line_share(text) if limit is not None else 0.0
        if _too_high(share, limit):
            return self._fail("boilerplate", f"{share:.3f} of lines are boilerplate", "max_boilerplate_lines",
                              limit, f"raise it, or edit the phrases in {BOILERPLATE_FILE.name}")
        return None

    def _language(self, text: str) -> tuple[str, str] | None:
        wanted = self.cfg.languages
        if wanted is None:
            return None
        lang = identify(text)
        if lang.code in wanted:
            return None
        return self._fail("language", f"language '{lang.code}' (confidence {lang.confidence:.2f})", "languages",
                          wanted, f"add '{lang.code}' to keep such documents")

    def _score(self, text: str) -> tuple[str, str] | None:
        if self.scorer is None:
            return None
        score = float(self.scorer(text))
        if score >= self.cfg.min_score:
            return None
        return self._fail("score", f"score {score:.4g} from {self.cfg.scorer}", "min_score", self.cfg.min_score,
                          "lower it to keep such documents")
