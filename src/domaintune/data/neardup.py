"""Near-duplicate detection with MinHash LSH (datasketch).

Signatures are computed per record inside the sharded phase (parallel, cached with the shard);
clustering runs once over the whole corpus in keeper order, so the best copy of every cluster is
seen first and every later match joins its cluster. datasketch rather than datatrove's MinHash
stages: those are four executor runs with files between them and keep the first document in
file order, while we need in-process clusters (for the split and the report) and a quality-based
keeper.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import xxhash

NEAR_DUPLICATE = "near_duplicate"
SCHEME = "affine32"
CANDIDATE_MARGIN = 0.15
# CJK characters are words of their own (no spaces between them); elsewhere runs of \w are words.
_TOKENS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w+")


def _hash32(data: bytes) -> int:
    return xxhash.xxh32_intdigest(data)  # ~10x faster than datasketch's default sha1


def shingles(text: str, ngram: int) -> set[bytes]:
    tokens = _TOKENS.findall(text.lower())
    if len(tokens) <= ngram:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i:i + ngram]).encode("utf-8") for i in range(len(tokens) - ngram + 1)}


class Signer:
    """MinHash signatures with one fixed set of permutations (built once, reused per document)."""

    def __init__(self, num_perm: int, ngram: int):
        from datasketch import MinHash  # imported on use: datasketch pulls in scipy (~2 s)

        self.num_perm, self.ngram = num_perm, ngram
        self._template = MinHash(num_perm=num_perm, seed=1, hashfunc=_hash32, scheme=SCHEME)

    def __call__(self, text: str) -> np.ndarray:
        m = type(self._template)(num_perm=self.num_perm, seed=1, hashfunc=_hash32, scheme=SCHEME,
                    permutations=self._template.permutations)
        m.update_batch(list(shingles(text, self.ngram)))
        return np.asarray(m.hashvalues)


def cluster(ids: list[str], signatures: Iterable[np.ndarray], threshold: float, num_perm: int,
            texts: Sequence[str], ngram: int) -> dict[str, str]:
    """Near-duplicate -> keeper id. `ids` come in keeper order (best copy first): a document whose
    shingle Jaccard with an earlier keeper is >= `threshold` joins the best-ranked such keeper.

    LSH only proposes candidates, and is set up for a lower threshold (CANDIDATE_MARGIN): banded
    for `threshold` itself it finds only about half of the pairs right at the threshold. Each
    candidate is then confirmed with the exact Jaccard of the shingle sets, so precision stays
    exact at `threshold`."""
    from datasketch import LeanMinHash, MinHashLSH

    lsh = MinHashLSH(threshold=max(0.3, threshold - CANDIDATE_MARGIN), num_perm=num_perm)
    rank: dict[str, int] = {}
    shingle_sets: dict[int, set[bytes]] = {}

    def jaccard(i: int, j: int) -> float:
        a = shingle_sets.setdefault(i, shingles(texts[i], ngram))
        b = shingle_sets.setdefault(j, shingles(texts[j], ngram))
        return len(a & b) / len(a | b) if a or b else 1.0

    duplicate_of: dict[str, str] = {}
    for i, (doc_id, sig) in enumerate(zip(ids, signatures)):
        sketch = LeanMinHash(seed=1, hashvalues=sig, scheme=SCHEME)
        matches = [c for c in lsh.query(sketch) if jaccard(rank[c], i) >= threshold]
        shingle_sets.pop(i, None)  # a duplicate is never compared again; keepers stay cached
        if matches:
            duplicate_of[doc_id] = min(matches, key=rank.__getitem__)
            continue
        rank[doc_id] = i
        lsh.insert(doc_id, sketch, check_duplication=False)
    return duplicate_of
