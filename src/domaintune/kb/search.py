"""`KnowledgeBase`: search with the principal's ACL mask applied inside both retrievers, fused by
reciprocal rank. This is the API the chat path, the `kb_search` tool and `domaintune kb` call."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domaintune.kb import index as store
from domaintune.kb.acl import Access, LabelMask, access_of
from domaintune.kb.embed import Embedder
from domaintune.kb.lexical import LexicalIndex, dense_search

MODES = ("hybrid", "lexical", "dense")


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    score: float  # RRF score (hybrid) or the retriever's own score
    chunk_id: str
    document_id: str
    lineage_id: str
    title: str
    version: str
    start: int
    end: int
    text: str

    def source(self, n: int, kb: str) -> dict:
        """What Prompt.sources and citations carry (never the full text twice)."""
        return {"id": self.chunk_id, "n": n, "kb": kb, "document_id": self.document_id, "chunk_id": self.chunk_id,
                "start": self.start, "end": self.end, "title": self.title, "version": self.version,
                "excerpt": self.text[:240]}


def rrf(rankings: Iterable[list[tuple[int, float]]], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): sum over lists of 1 / (k + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (row, _) in enumerate(ranking, 1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class KnowledgeBase:
    """One loaded index. `search` is thread-safe; `reload` swaps in a rebuilt index atomically."""

    def __init__(self, name: str, folder: Path, *, mode: str = "hybrid", embedder: Embedder | None = None,
                 top_k: int = 5, candidates: int = 50, rrf_k: int = 60, open_principal: str = "all",
                 sentences: int = 0):
        if mode not in MODES:
            raise store.KBError(f"kb.retrieval.mode: '{mode}' is not one of {', '.join(MODES)}")
        if mode != "lexical" and embedder is None:
            raise store.KBError(f"kb.retrieval.mode: {mode} needs an embedder (or use mode: lexical)")
        self.name, self.folder, self.mode, self.embedder = name, Path(folder), mode, embedder
        self.top_k, self.candidates, self.rrf_k, self.open_principal = top_k, candidates, rrf_k, open_principal
        self.sentences = sentences  # how much of each hit an answer prompt shows (kb.retrieval.sentences)
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        data = store.load(self.folder)
        if self.mode != "lexical":
            if data.dense is None:
                raise store.KBError(f"{self.folder}: the index was built lexical-only; mode '{self.mode}' needs "
                                    f"dense vectors: rebuild with `domaintune kb build CONFIG`")
            store.check_embedder(data.meta, self.embedder, self.folder)
        lexical = LexicalIndex([store.passage_text(c) for c in data.chunks])
        labels = [frozenset(data.documents[c.document_id]["acl"]) for c in data.chunks]
        with self._lock:
            self._data, self._lexical, self._labels = data, lexical, LabelMask(labels)

    # ------------------------------------------------------------------ reading
    @property
    def version(self) -> str:
        return str(self._data.meta["version"])

    def documents(self) -> list[dict]:
        return [{k: d[k] for k in ("id", "title", "version", "acl")} for d in self._data.documents.values()]

    def access(self, principal, narrow: Iterable[str] | None = None) -> Access:
        return access_of(principal, self.open_principal, narrow)

    def fingerprint(self, principal, narrow: Iterable[str] | None = None) -> str:
        """ACL fingerprint + index version, for cache keys: a revoke or a re-index changes it."""
        return self.access(principal, narrow).fingerprint(self.version)

    def search(self, principal, query: str, k: int | None = None, *, mode: str | None = None,
               narrow: Iterable[str] | None = None) -> list[Hit]:
        """The top-k chunks `principal` may read. The mask is built first and each retriever ranks
        only allowed rows; `narrow` (an app/agent identity's labels) can only remove rights."""
        mode = mode or self.mode
        if mode not in MODES or (mode != "lexical" and self.embedder is None):
            raise store.KBError(f"search mode '{mode}' is not available for kb '{self.name}' (built: {self.mode})")
        with self._lock:
            data, lexical, labels = self._data, self._lexical, self._labels
        mask = labels.mask(self.access(principal, narrow))
        k = k or self.top_k
        if not query.strip() or not mask.any():
            return []
        limit = max(self.candidates, k)
        lists = []
        if mode in ("hybrid", "lexical"):
            lists.append(lexical.search(query, mask, limit))
        if mode in ("hybrid", "dense"):
            lists.append(dense_search(data.dense, self.embedder.query(query), mask, limit))
        ranked = rrf(lists, self.rrf_k) if mode == "hybrid" else lists[0]
        return [self._hit(data, rank, row, score) for rank, (row, score) in enumerate(ranked[:k], 1)]

    @staticmethod
    def _hit(data: store.IndexData, rank: int, row: int, score: float) -> Hit:
        c = data.chunks[row]
        return Hit(rank, round(float(score), 6), c.chunk_id, c.document_id, c.lineage_id, c.title, c.version,
                   c.start, c.end, c.text)

    def term_weight(self, term: str) -> float:
        """The lexical index's idf of `term` (what answer passages weigh shared words by)."""
        with self._lock:
            lexical = self._lexical
        return lexical.idf(term)

    def passages(self, hits: list[Hit], question: str):
        """`hits` as the numbered passages an answer prompt shows (kb.answer.passages, kb.retrieval.sentences)."""
        from domaintune.kb.answer import passages

        return passages(hits, question, self.sentences, self.term_weight)

    def rows(self) -> int:
        return len(self._data.chunks)

    def chunk_mask(self, principal) -> np.ndarray:
        """The rows `principal` may read (tests and the console's document view)."""
        return self._labels.mask(self.access(principal))
