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
from collections.abc import Iterable

import numpy as np
import xxhash

NEAR_DUPLICATE = "near_duplicate"
SCHEME = "affine32"
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


def cluster(ids: list[str], signatures: Iterable[np.ndarray], threshold: float,
            num_perm: int) -> dict[str, str]:
    """Near-duplicate -> keeper id. `ids` come in keeper order (best copy first): a document that
    matches an earlier keeper above `threshold` joins the best-ranked such keeper's cluster."""
    from datasketch import LeanMinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    rank: dict[str, int] = {}
    sketches: dict[str, LeanMinHash] = {}
    duplicate_of: dict[str, str] = {}
    for i, (doc_id, sig) in enumerate(zip(ids, signatures)):
        sketch = LeanMinHash(seed=1, hashvalues=sig, scheme=SCHEME)
        matches = [c for c in lsh.query(sketch) if sketches[c].jaccard(sketch) >= threshold]
        if matches:
            duplicate_of[doc_id] = min(matches, key=rank.__getitem__)
            continue
        rank[doc_id] = i
        sketches[doc_id] = sketch
        lsh.insert(doc_id, sketch, check_duplication=False)
    return duplicate_of
