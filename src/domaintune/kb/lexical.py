"""BM25 (bm25s) over words: jieba's search-mode words for Chinese, lower-cased words and numbers
otherwise. The ACL mask is applied inside scoring: only allowed rows are ranked, so a forbidden
chunk can never take a place in the candidate list (no post-filter, no short lists)."""

from __future__ import annotations

import functools
import logging
import math
import re
import unicodedata
from collections import Counter

import numpy as np

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|\d+(?:[.,]\d+)*|[^\W\d_{_CJK}]+", re.UNICODE)
_jieba = None


@functools.cache
def _stopwords() -> tuple[frozenset[str], frozenset[str]]:
    """Function words carry no topic: bm25s's lists (NLTK's English list, which also holds the "s"
    of a possessive "Bank's"; a Chinese list of particles, pronouns and 多少), plus modal and
    politeness words that questions are full of ("could you", "please")."""
    from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN_PLUS

    return (frozenset(STOPWORDS_EN_PLUS) | {"can", "much", "many", "could", "would", "please"},
            frozenset(STOPWORDS_CHINESE))


def _segmenter():
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # its dictionary-load banner is not an error
        jieba.initialize()
        _jieba = jieba
    return _jieba


def tokenize(text: str) -> list[str]:
    """Index terms of `text`: words, numbers (3.75 and 10,000 stay whole), jieba words for Chinese."""
    text = unicodedata.normalize("NFKC", text).lower()
    stop_en, stop_zh = _stopwords()
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        word = m.group()
        if "\u3400" <= word[0] <= "\ufaff":
            out.extend(w for w in _segmenter().cut_for_search(word) if w.strip() and w not in stop_zh)
        elif word not in stop_en:
            out.append(word.replace(",", "") if word[0].isdigit() else word)
    return out


class LexicalIndex:
    def __init__(self, texts: list[str]):
        import bm25s

        self.size = len(texts)
        self._bm25 = None
        tokens = [tokenize(t) for t in texts]
        self._df = Counter(term for t in tokens for term in set(t))
        if any(tokens):
            self._bm25 = bm25s.BM25()
            # a chunk with no index terms still needs its row, so row i stays chunk i
            self._bm25.index([t or ["\u0000"] for t in tokens], show_progress=False)

    def idf(self, term: str) -> float:
        """BM25's inverse document frequency: a term in every chunk ("bank") weighs almost nothing."""
        df = self._df.get(term, 0)
        return math.log(1 + (self.size - df + 0.5) / (df + 0.5))

    def search(self, query: str, mask: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """(row, score) of the best allowed rows with a positive score, best first."""
        terms = tokenize(query)
        if self._bm25 is None or not terms or not mask.any():
            return []
        scores = self._bm25.get_scores(terms, weight_mask=mask.astype(np.float32))
        allowed = np.flatnonzero(mask & (scores > 0))
        return _top(allowed, scores[allowed], limit)


def _top(rows: np.ndarray, scores: np.ndarray, limit: int) -> list[tuple[int, float]]:
    if rows.size == 0:
        return []
    if rows.size > limit:
        keep = np.argpartition(-scores, limit - 1)[:limit]
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))  # ties broken by row: deterministic results
    return [(int(rows[i]), float(scores[i])) for i in order]


def dense_search(matrix: np.ndarray, query: np.ndarray, mask: np.ndarray, limit: int) -> list[tuple[int, float]]:
    """Exact cosine search over the allowed rows only (forbidden rows are never scored)."""
    allowed = np.flatnonzero(mask)
    if allowed.size == 0 or matrix.shape[0] == 0:
        return []
    return _top(allowed, matrix[allowed] @ query, limit)
