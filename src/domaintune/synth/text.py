"""Tokens, ROUGE-L, n-grams and numbers that work on Chinese as well as English.

`rouge_score` (what Self-Instruct uses) lower-cases and keeps only [a-z0-9] runs, so every Chinese
instruction tokenizes to nothing and scores 0: Chinese is never deduplicated. Here a CJK character
is a token of its own and other scripts are runs of `\\w`, so identical Chinese strings score 1.0.
"""

from __future__ import annotations

import re
from collections import Counter

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_TOKENS = re.compile(f"[{_CJK}]|[^\\W_]+")
_HAS_CJK = re.compile(f"[{_CJK}]")
# "$1,000.50", "3.75%", "0800-462-7000": digits with thousands separators and decimals
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_NUMERAL = re.compile("[零一二两三四五六七八九十百千万]+")


def tokens(text: str) -> list[str]:
    return _TOKENS.findall(text.lower())


def language(text: str) -> str:
    """'zh' when a fifth of the tokens are CJK characters, else 'en' (enough to pick a prompt)."""
    toks = tokens(text)
    cjk = sum(1 for t in toks if _HAS_CJK.match(t))
    return "zh" if toks and cjk / len(toks) >= 0.2 else "en"


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str | list[str], b: str | list[str]) -> float:
    """ROUGE-L F1 between two texts (or token lists)."""
    ta = tokens(a) if isinstance(a, str) else a
    tb = tokens(b) if isinstance(b, str) else b
    if not ta or not tb:
        return 0.0
    lcs = lcs_length(ta, tb)
    return 2 * lcs / (len(ta) + len(tb))


def ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams over all n-grams in the set (Li et al. 2016)."""
    grams: Counter = Counter()
    for t in texts:
        toks = tokens(t)
        grams.update(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def _zh_number(s: str) -> int:
    """十五 -> 15, 二百五十 -> 250, 三千 -> 3000 (simple numerals, what a bank notice uses)."""
    total, current = 0, 0
    units = {"十": 10, "百": 100, "千": 1000, "万": 10000}
    for ch in s:
        if ch in _ZH_DIGITS:
            current = _ZH_DIGITS[ch]
        else:
            total += (current or 1) * units[ch]
            current = 0
    return total + current


def numbers(text: str) -> set[str]:
    """Numbers in canonical form: '1,000' and '1000' and '1000.00' are all '1000'; 十五 is '15'."""
    found = set()
    for raw in _NUMBER.findall(text):
        value = raw.replace(",", "").rstrip(".")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        found.add(value.lstrip("0") or "0")
    for raw in _ZH_NUMERAL.findall(text):
        if len(raw) > 1 or raw in _ZH_DIGITS:
            found.add(str(_zh_number(raw)))
    return found


_ENTITY = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][A-Za-z0-9&]+(?:\s+[A-Z][A-Za-z0-9&]+)*")
_NOT_ENTITIES = {"I", "The", "A", "An", "Yes", "No", "It", "This", "You", "Your", "We", "Our", "If", "For", "In"}


def entities(text: str) -> set[str]:
    """Capitalized names not at a sentence start ('Harborview Bank', 'HarborPay', 'SWIFT')."""
    return {m.group(0) for m in _ENTITY.finditer(text) if m.group(0) not in _NOT_ENTITIES}
