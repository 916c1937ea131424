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


def char_ratios(text: str) -> tuple[float, float]:
    """(symbol ratio, digit ratio) over the non-space characters. A run of one repeated symbol
    counts once: table rules and underlines (+-----+, =====) are layout, not noise."""
    symbols = digits = total = 0
    previous = ""
    for ch in text:
        if ch.isspace() or (ch == previous and not ch.isalnum()):
            continue
        previous = ch
        total += 1
        if ch.isdigit():
            digits += 1
        elif unicodedata.category(ch)[0] in "PS":
            symbols += 1
    return (symbols / total, digits / total) if total else (0.0, 0.0)


def repeated_line_share(text: str) -> float:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return 1 - len(set(lines)) / len(lines) if lines else 0.0


def repeated_ngram_share(tokens: list[str], n: int) -> float:
    """Share of words covered by a word n-gram that occurs more than once (Gopher's dup n-grams)."""
    if len(tokens) < n:
        return 0.0
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    covered = bytearray(len(tokens))
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i:i + n] = b"\x01" * n
    return sum(covered) / len(tokens)


@lru_cache(maxsize=1)
def _boilerplate() -> re.Pattern:
    patterns = yaml.safe_load(BOILERPLATE_FILE.read_text(encoding="utf-8"))["patterns"]
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


def boilerplate_line_share(text: str) -> float:
    lines = sum(1 for line in text.split("\n") if line.strip())
    if not lines:
        return 0.0
    # One scan of the whole text (matches are rare); a line counts once however many match in it.
    hit_lines = {text.rfind("\n", 0, m.start()) for m in _boilerplate().finditer(text)}
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

    def __call__(self, rec: Record) -> Record | Reject:
        for check in (self._length, self._ratios, self._repetition, self._boilerplate, self._language,
                      self._score):
            failure = check(rec.text)
            if failure:
                reason, detail = failure
                return Reject.of(rec, f"quality.{reason}", detail)
        return rec

    def _fail(self, reason: str, measured: str, key: str, limit: object, fix: str) -> tuple[str, str]:
        return reason, f"{measured}, limit data.quality.{key}={limit}; {fix}"

    def _length(self, text: str) -> tuple[str, str] | None:
        c = self.cfg
        if c.max_chars is not None and len(text) > c.max_chars:
            return self._fail("max_chars", f"{len(text)} chars", "max_chars", c.max_chars,
                              "raise it (or null) to keep long documents")
        n = len(words(text))
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
            share = repeated_ngram_share(words(text), c.ngram_size)
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
