from __future__ import annotations

import pytest

from domaintune.config import QualityConfig
from domaintune.data.quality import (
    QualityFilter,
    boilerplate_line_share,
    char_ratios,
    repeated_line_share,
    repeated_ngram_share,
    words,
)
from domaintune.data.records import Record, Reject
from domaintune.errors import ConfigError

GOOD_EN = "The savings account pays interest monthly and has no fee for online transfers between accounts."
GOOD_ZH = "储蓄账户每月支付利息，网上转账不收取任何费用，客户可以随时查询余额。"


def rec(text: str) -> Record:
    return Record("r1", text, "s", "src", "f.jsonl", 1)


def judge(text: str, **cfg) -> Record | Reject:
    return QualityFilter(QualityConfig(**cfg))(rec(text))


def test_measures():
    assert words("IC50 值很高 ok") == ["IC50", "值", "很", "高", "ok"]
    symbols, digits = char_ratios("ab!! 12")
    assert (symbols, digits) == (pytest.approx(1 / 5), pytest.approx(2 / 5))  # "!!" is one run
    assert char_ratios("+-----+\n| a |")[0] == pytest.approx(5 / 6)
    assert repeated_line_share("a\nb\na\na\n\n") == pytest.approx(0.5)
    assert repeated_ngram_share(["a", "b", "c", "a", "b", "c"], 3) == 1.0
    assert repeated_ngram_share(["a", "b", "c", "d", "e", "f"], 3) == 0.0
    assert boilerplate_line_share("All rights reserved.\nReal text here.\n版权所有 2024") == pytest.approx(2 / 3)


def test_good_documents_pass_the_defaults():
    assert isinstance(judge(GOOD_EN), Record) and isinstance(judge(GOOD_ZH), Record)


@pytest.mark.parametrize("text,cfg,reason,key", [
    (GOOD_EN, {"max_chars": 20}, "max_chars", "data.quality.max_chars=20"),
    ("two words", {}, "min_words", "data.quality.min_words=3"),
    ("#### $$$ %%% !!! @@@ ^^^ &&& *** ((( ))) ok ok ok", {"max_symbol_ratio": 0.3}, "symbol_ratio",
     "data.quality.max_symbol_ratio=0.3"),
    ("1 2 3 4 5 6 7 8 9 0 11 12 13 items", {}, "digit_ratio", "data.quality.max_digit_ratio=0.5"),
    ("buy now\nbuy now\nbuy now\nbuy now\nreal line", {}, "repeated_lines", "data.quality.max_repeated_lines=0.5"),
    (" ".join(["click the big red button now"] * 6), {"max_repeated_lines": None}, "repeated_ngrams",
     "data.quality.max_repeated_ngrams=0.8"),
    ("Home\nCookies help us: accept cookie policy\nAll rights reserved\nSome text here", {}, "boilerplate",
     "data.quality.max_boilerplate_lines=0.5"),
    ("Der Kunde kann das Konto jederzeit online und in der Filiale eröffnen.", {"languages": ["en", "zh"]},
     "language", "data.quality.languages=['en', 'zh']"),
])
def test_each_filter_rejects_with_reason_value_and_key(text, cfg, reason, key):
    out = judge(text, **cfg)
    assert isinstance(out, Reject) and out.reason == f"quality.{reason}"
    assert key in out.detail and any(ch.isdigit() for ch in out.detail.split(",")[0])


def test_null_threshold_switches_a_filter_off():
    text = "1 2 3 4 5 6 7 8 9 0 11 12 13 items"
    assert isinstance(judge(text, max_digit_ratio=None), Record)


def length_score(text: str) -> float:
    return len(text) / 100


class KeywordScorer:
    def __call__(self, text: str) -> float:
        return 1.0 if "account" in text else 0.0


def test_model_scorer_hook():
    target = f"{__name__}:length_score"
    assert isinstance(judge(GOOD_EN, scorer=target, min_score=0.5), Record)
    out = judge("short text but enough words", scorer=target, min_score=0.5)
    assert out.reason == "quality.score" and "score 0.27" in out.detail and "min_score=0.5" in out.detail
    cls = f"{__name__}:KeywordScorer"  # a class is instantiated once
    assert judge(GOOD_ZH, scorer=cls, min_score=0.5).reason == "quality.score"


def test_scorer_config_errors():
    with pytest.raises(ConfigError, match="data.quality.scorer: cannot import"):
        QualityFilter(QualityConfig(scorer="no_such_module_x:f", min_score=0))
    with pytest.raises(ValueError, match="both scorer and min_score"):
        QualityConfig(scorer=f"{__name__}:length_score")


def _char_ratios_reference(text: str) -> tuple[float, float]:
    """The per-character definition `char_ratios` must keep (its first implementation)."""
    import unicodedata

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


def test_char_ratios_matches_its_per_character_definition():
    import random

    from domaintune.data.quality import char_ratios

    rng = random.Random(0)
    alphabet = "ab1_-=+|. \t\n\u00a0\u3000²٣，。！中-—__**##==  \u2028x9"
    cases = ["", "   ", "+-----+ | a | b |", "- - - -", "=====\n=====", "__init__", "１２３", "a²b³"]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80))) for _ in range(2000)]
    for text in cases:
        assert char_ratios(text) == _char_ratios_reference(text), repr(text)


def _repeated_ngram_share_reference(tokens: list[str], n: int) -> float:
    """The slice-and-mark definition `repeated_ngram_share` must keep (its first implementation)."""
    from collections import Counter

    if len(tokens) < n:
        return 0.0
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    covered = bytearray(len(tokens))
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i:i + n] = b"\x01" * n
    return sum(covered) / len(tokens)


def test_repeated_ngram_share_matches_its_definition():
    import random

    rng = random.Random(0)
    for _ in range(3000):
        n, vocab = rng.randint(2, 6), ["a", "b", "c", "d", "中", "文", "xyzzy"][:rng.randint(1, 7)]
        tokens = [rng.choice(vocab) for _ in range(rng.randint(0, 60))]
        assert repeated_ngram_share(tokens, n) == _repeated_ngram_share_reference(tokens, n), (tokens, n)


@pytest.mark.parametrize(("pattern", "gates"), [
    (r"\b(privacy policy|terms of (use|service))\b", ("privacy policy", "terms of ")),
    (r"\bcookies?\b.*\b(accept|consent)\b", ("cookie",)),
    (r"^\s*(首页|登录)\s*$", ("首页", "登录")),
    ("a|b", None),  # top-level alternation: a match need not contain "a"
    ("(foo)?bar", None),  # optional group
    ("(?:x)y", None),
    ("[ab]c", None),
    ("Home", None),  # upper case: not read (IGNORECASE would need both cases)
    ("kelvin\u212a", ("kelvin",)),  # the Kelvin sign matches "k" under IGNORECASE: the gate stops before it
    ("ab*c", ("a",)),
])
def test_literal_gates_only_claim_what_every_match_contains(pattern, gates):
    from domaintune.data.quality import literal_gates

    assert literal_gates(pattern) == gates


def test_gated_boilerplate_scan_counts_what_the_full_scan_counts():
    import random

    from domaintune.data.quality import _boilerplate

    def full_scan(text: str) -> float:
        lines = sum(1 for line in text.split("\n") if line.strip())
        hits = {text.rfind("\n", 0, m.start()) for m in _boilerplate().finditer(text)}
        return len(hits) / lines if lines else 0.0

    rng = random.Random(0)
    pieces = ["All Rights Reserved", "home", "  HOME  ", "Click here", "cookies we use", "Privacy Policy",
              "terms of service", "copyright © 2024", "版权所有", "subscribe to our newsletter", "share on X",
              "plain words", "next", "\n", "\n\n", "Menu\n", "back to top", "首页", "ſhare on x"]
    for _ in range(3000):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert boilerplate_line_share(text) == full_scan(text), repr(text)
