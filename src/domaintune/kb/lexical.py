"""BM25 (bm25s) over words: jieba's search-mode words for Chinese, lower-cased words and numbers
otherwise. The ACL mask is applied inside scoring: only allowed rows are ranked, so a forbidden
chunk can never take a place in the candidate list (no post-filter, no short lists)."""

from __future__ import annotations

import logging
import re
import unicodedata

import numpy as np

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|\d+(?:[.,]\d+)*|[^\W\d_{_CJK}]+", re.UNICODE)
_STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "i", "in", "is", "it",
    "my", "of", "on", "or", "the", "to", "what", "when", "which", "who", "with", "you", "your", "can", "much",
    "many"
})
_jieba = None


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
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        word = m.group()
        if "\u3400" <= word[0] <= "\ufaff":
            out.extend(w for w in _segmenter().cut_for_search(word) if w.strip())
        elif word not in _STOP:
            out.append(word.replace(",", "") if word[0].isdigit() else word)
    return out


class LexicalIndex:
    def __init__(self, texts: list[str]):
        import bm25s

        self.size = len(texts)
        self._bm25 = None
        tokens = [tokenize(t) for t in texts]
        if any(tokens):
            self._bm25 = bm25s.BM25()
            # a chunk with no index terms still needs its row, so row i stays chunk i
            self._bm25.index([t or ["\u0000"] for t in tokens], show_progress=False)

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
