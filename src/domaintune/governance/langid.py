"""Offline language identification from scripts and function words (no model, no download).

Chinese, Japanese, Korean, Cyrillic and Arabic text is told apart by its script: kana marks
Japanese even inside Han text, hangul Korean. Latin-script text is labelled by the language whose
function words (langid_stopwords.yaml) make up the largest share of its words. This is enough to
keep zh/en corpora clean; it does not pretend to separate close languages of other scripts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

STOPWORDS_FILE = Path(__file__).with_name("langid_stopwords.yaml")
OTHER = "other"
# Each script's characters; a document is labelled by the script holding most of its letters.
_SCRIPTS = {
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "kana": re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]"),
    "hangul": re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
    "arabic": re.compile(r"[\u0600-\u06ff]"),
    "latin": re.compile(r"[A-Za-z\u00c0-\u024f]"),
}
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:'[a-z]+)?")
KANA_FOR_JAPANESE = 0.05  # share of kana among CJK characters; Chinese text has none


@dataclass(frozen=True)
class Language:
    code: str
    confidence: float  # share of the letters (or words) that support the label


@lru_cache(maxsize=1)
def _stopwords() -> tuple[float, dict[str, frozenset[str]]]:
    table = yaml.safe_load(STOPWORDS_FILE.read_text(encoding="utf-8"))
    return table["min_share"], {lang: frozenset(words) for lang, words in table["languages"].items()}


def _latin_language(text: str) -> Language:
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return Language(OTHER, 0.0)
    min_share, table = _stopwords()
    shares = {lang: sum(w in stop for w in words) / len(words) for lang, stop in table.items()}
    best = max(shares, key=lambda lang: shares[lang])
    return Language(best, shares[best]) if shares[best] >= min_share else Language(OTHER, 1 - shares[best])


def identify(text: str, sample_chars: int = 4000) -> Language:
    """The language of `text` (its first `sample_chars` characters are enough and keep it fast)."""
    sample = text[:sample_chars]
    counts = {script: len(rx.findall(sample)) for script, rx in _SCRIPTS.items()}
    letters = sum(counts.values())
    if not letters:
        return Language(OTHER, 0.0)
    cjk = counts["han"] + counts["kana"]
    if cjk and counts["kana"] / cjk >= KANA_FOR_JAPANESE and cjk >= counts["latin"] / 4:
        return Language("ja", cjk / letters)
    # Chinese prose mixed with Latin product names or code still counts as Chinese: one Han
    # character carries about as much as a four-letter Latin word.
    weights = {**counts, "han": counts["han"] * 4}
    script = max(weights, key=lambda s: weights[s])
    share = weights[script] / sum(weights.values())
    if script == "latin":
        return _latin_language(sample)
    code = {"han": "zh", "kana": "ja", "hangul": "ko", "cyrillic": "ru", "arabic": "ar"}[script]
    return Language(code, share)
