"""Near-duplicate signatures and matching with MinHash LSH (datasketch).

    sig = signature(text)                         # or Signer(num_perm, ngram)(text) for many texts
    index = NearDupIndex(threshold=0.8)           # e.g. a pool of texts already kept
    keeper = index.match(text, sig)               # id of the best earlier match, or None
    index.add(doc_id, text, sig)

`cluster` runs the index over a whole list in keeper order (best copy first): the data stage
uses it over the corpus, a synthesis filter over pool-then-generated texts. datasketch rather
than datatrove's MinHash stages: those are four executor runs with files between them and keep
the first document in file order, while callers need in-process clusters and their own keeper.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import xxhash

SCHEME = "affine32"
CANDIDATE_MARGIN = 0.15
# Shingles of keeper sets held by `cluster` and the merge at once (~100 B each: ~10 MB). A budget in shingles,
# not in sets: keepers are walked longest first, so a fixed number of sets held the corpus's longest texts,
# and those grow with the corpus (profiled: 256 sets were 20 MB at 50 MB of corpus, 30 MB at 200 MB).
SHINGLE_BUDGET = 100_000
NUM_PERM, NGRAM = 128, 5  # the data stage's defaults (data.near_dedup)
# CJK characters are words of their own (no spaces between them); elsewhere runs of \w are words.
_TOKENS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w+")


# xxh32 (~10x faster than datasketch's default sha1), passed straight in: a wrapper per shingle
# cost a Python call each (profiled)
_hash32 = xxhash.xxh32_intdigest


def exact_digest(text: str) -> bytes:
    """Key for exact duplicates: identical texts, and only those, share it (16 bytes)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def shingles(text: str, ngram: int) -> set[bytes]:
    """Lower-cased word (or CJK character) n-grams: what signatures and the exact Jaccard compare."""
    tokens = _TOKENS.findall(text.lower())
    if len(tokens) <= ngram:
        return {" ".join(tokens).encode("utf-8")}
    # zip/map keep the per-shingle work in C (profiled): same set as joining each slice
    return set(map(str.encode, map(" ".join, zip(*[tokens[i:] for i in range(ngram)]))))


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Signer:
    """MinHash signatures with one fixed set of permutations (built once, reused per document)."""

    def __init__(self, num_perm: int = NUM_PERM, ngram: int = NGRAM):
        from datasketch import MinHash  # imported on use: datasketch pulls in scipy (~2 s)

        self.num_perm, self.ngram = num_perm, ngram
        # One MinHash reused: a new one per document re-parsed the permutations (profiled). update_batch
        # replaces `hashvalues` rather than writing into it, so a returned signature is never changed.
        self._minhash = MinHash(num_perm=num_perm, seed=1, hashfunc=_hash32, scheme=SCHEME)
        self._empty = np.array(self._minhash.hashvalues, copy=True)

    def __call__(self, text: str) -> np.ndarray:
        m = self._minhash
        m.hashvalues = self._empty.copy()
        m.update_batch(list(shingles(text, self.ngram)))
        return np.asarray(m.hashvalues)


def signature(text: str, num_perm: int = NUM_PERM, ngram: int = NGRAM) -> np.ndarray:
    """One text's signature (uint64 array of `num_perm` values); use a `Signer` for many texts."""
    return Signer(num_perm, ngram)(text)


class NearDupIndex:
    """Texts kept so far; a new text matches the best-ranked (earliest added) kept text whose
    shingle Jaccard with it is >= `threshold`.

    LSH only proposes candidates, and is set up for a lower threshold (CANDIDATE_MARGIN): banded
    for `threshold` itself it finds only about half of the pairs right at the threshold. Each
    candidate is then confirmed with the exact Jaccard of the shingle sets, so precision stays
    exact at `threshold`."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, ngram: int = NGRAM):
        from datasketch import LeanMinHash, MinHashLSH

        self._lean = LeanMinHash
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self._lsh = MinHashLSH(threshold=max(0.3, threshold - CANDIDATE_MARGIN), num_perm=num_perm)
        self._rank: dict[str, int] = {}
        self._texts: dict[str, str] = {}
        self._shingles: dict[str, set[bytes]] = {}  # filled on first comparison: most keepers never need it

    def _sketch(self, sig: np.ndarray):
        return self._lean(seed=1, hashvalues=sig, scheme=SCHEME)

    def match(self, text: str, sig: np.ndarray) -> str | None:
        candidates = self._lsh.query(self._sketch(sig))
        if not candidates:
            return None
        mine = shingles(text, self.ngram)
        matches = [c for c in candidates if jaccard(self._kept_shingles(c), mine) >= self.threshold]
        return min(matches, key=self._rank.__getitem__) if matches else None

    def add(self, doc_id: str, text: str | Callable[[], str], sig: np.ndarray) -> None:
        self._rank[doc_id] = len(self._rank)
        self._texts[doc_id] = text
        self._lsh.insert(doc_id, self._sketch(sig), check_duplication=False)

    def _kept_shingles(self, doc_id: str) -> set[bytes]:
        if doc_id not in self._shingles:
            text = self._texts[doc_id]
            self._shingles[doc_id] = shingles(text() if callable(text) else text, self.ngram)
        return self._shingles[doc_id]


def band_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) exactly as NearDupIndex's datasketch LSH chooses them, so both propose the same pairs."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(max(0.3, threshold - CANDIDATE_MARGIN), num_perm, 0.5, 0.5)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    """One 64-bit key per band: two documents share a band exactly when their keys for it are equal."""
    row = np.ascontiguousarray(sig[:bands * rows], dtype=np.uint64)
    return [xxhash.xxh64_intdigest(row[b * rows:(b + 1) * rows].tobytes()) for b in range(bands)]


class KeeperShingles:
    """Shingle sets of keepers that were candidates, most recently used last. Bounded by their total number of
    shingles (`SHINGLE_BUDGET`; the set in use is always kept): a set is ~50 KB for a page of text, and one per
    duplicate cluster grew with the corpus; an evicted keeper's set is recomputed from its text when needed
    again (the same set, so the keepers found do not depend on the budget)."""

    def __init__(self, ngram: int, text_of: Callable[[int], str], budget: int | None = None):
        self.ngram, self.text_of = ngram, text_of
        self.budget = SHINGLE_BUDGET if budget is None else budget
        self._sets: OrderedDict[int, set[bytes]] = OrderedDict()
        self.held = 0  # shingles in the sets held

    def __getitem__(self, k: int) -> set[bytes]:
        if k in self._sets:
            self._sets.move_to_end(k)
            return self._sets[k]
        found = self._sets[k] = shingles(self.text_of(k), self.ngram)
        self.held += len(found)
        while self.held > self.budget and len(self._sets) > 1:
            self.held -= len(self._sets.popitem(last=False)[1])
        return found


def _band_runs(signatures: Iterable[np.ndarray], n: int, bands: int, rows: int) -> np.ndarray:
    """[N, bands] int32: for each document and band, the id of the group of documents whose band is
    identical, or -1 when no other document shares it (such a band can never propose a candidate).
    One pass over the signatures; 8 bytes per band and document are held, not the signatures."""
    table = np.zeros((n, bands), dtype=np.uint64)
    for i, sig in enumerate(signatures):
        table[i] = band_keys(sig, bands, rows)
    runs = np.full(table.shape, -1, dtype=np.int32)
    for b in range(bands):
        _, inverse, counts = np.unique(table[:, b], return_inverse=True, return_counts=True)
        shared = counts[inverse] > 1
        runs[shared, b] = inverse[shared]
    return runs


def cluster(ids: list[str], signatures: Iterable[np.ndarray], threshold: float, num_perm: int,
            texts: Sequence[str | Callable[[], str]], ngram: int) -> dict[str, str]:
    """Near-duplicate -> keeper id. `ids` come in keeper order (best copy first): a document whose
    shingle Jaccard with an earlier keeper is >= `threshold` joins the best-ranked such keeper.
    `texts` may be loaders (called when a text is needed): the index then keeps no text.

    Same candidates and answers as running NearDupIndex over the list (tested), but the whole list
    is known up front, so the bands are grouped once with numpy instead of a hash table per band:
    ~130 bytes per document instead of datasketch's ~4 KB, which dominated the data stage's memory."""
    bands, rows = band_params(threshold, num_perm)
    runs = _band_runs(signatures, len(ids), bands, rows)
    keepers_in: dict[tuple[int, int], list[int]] = {}  # (band, group) -> keeper positions, ascending
    duplicate_of: dict[str, str] = {}

    def text_of(i: int) -> str:
        source = texts[i]
        return source() if callable(source) else source

    kept_shingles = KeeperShingles(ngram, text_of)
    for i, doc_id in enumerate(ids):
        groups = [(b, int(g)) for b, g in enumerate(runs[i]) if g >= 0]
        candidates = sorted({k for key in groups for k in keepers_in.get(key, ())})
        keeper = None
        if candidates:
            mine = shingles(text_of(i), ngram)
            for k in candidates:  # ascending position = best rank first
                if jaccard(kept_shingles[k], mine) >= threshold:
                    keeper = k
                    break
        if keeper is None:
            for key in groups:
                keepers_in.setdefault(key, []).append(i)
        else:
            duplicate_of[doc_id] = ids[keeper]
    return duplicate_of
