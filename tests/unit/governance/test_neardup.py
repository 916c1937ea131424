from __future__ import annotations

import random

from domaintune.governance.neardup import NearDupIndex, Signer, cluster, exact_digest, shingles, signature


def _text(rng: random.Random, words: list[str], n: int = 300) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def _edit(text: str, rng: random.Random, changes: int) -> str:
    tokens = text.split()
    for _ in range(changes):
        tokens[rng.randrange(len(tokens))] = "edited"
    return " ".join(tokens)


def test_shingles_treat_cjk_characters_as_words():
    assert shingles("海港银行", 2) == {"海 港".encode(), "港 银".encode(), "银 行".encode()}
    assert shingles("Hello, World", 5) == {b"hello world"}  # shorter than n: one shingle


def test_planted_near_duplicates_found_and_distinct_docs_kept():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    originals = [_text(rng, words) for _ in range(30)]
    near = {f"near{i}": _edit(originals[i], rng, 3) for i in range(10)}  # ~1% of words changed
    ids = [f"orig{i}" for i in range(30)] + list(near)
    texts = originals + list(near.values())
    sign = Signer(128, 5)
    found = cluster(ids, [sign(t) for t in texts], threshold=0.7, num_perm=128, texts=texts, ngram=5)
    assert found == {f"near{i}": f"orig{i}" for i in range(10)}


def test_keeper_is_the_first_in_keeper_order_and_deterministic():
    rng = random.Random(1)
    base = _text(rng, [f"w{i}" for i in range(500)])
    texts = {"a": _edit(base, rng, 2), "b": base, "c": _edit(base, rng, 2)}
    sign = Signer(64, 3)
    sigs = {k: sign(v) for k, v in texts.items()}
    for order in (["b", "a", "c"], ["b", "c", "a"]):
        got = cluster(order, [sigs[k] for k in order], 0.5, 64, [texts[k] for k in order], 3)
        assert got == {"a": "b", "c": "b"}
    assert cluster(list("cab"), [sigs[k] for k in "cab"], 0.5, 64, [texts[k] for k in "cab"], 3) == {
        "a": "c", "b": "c"}


def test_candidates_below_the_exact_threshold_are_not_duplicates():
    rng = random.Random(2)
    base = _text(rng, [f"w{i}" for i in range(3000)], 400)
    pairs = {j: _edit(base, rng, j) for j in (2, 40)}  # ~2% and ~45% of shingles changed
    sign = Signer(128, 5)
    for edits, expect in ((2, {"copy": "base"}), (40, {})):
        texts = [base, pairs[edits]]
        assert cluster(["base", "copy"], [sign(t) for t in texts], 0.8, 128, texts, 5) == expect


def test_index_matches_generated_text_against_a_pool():
    """The synthesis-filter use: a pool of kept texts, then each new text is checked and added."""
    rng = random.Random(3)
    words = [f"w{i}" for i in range(3000)]
    pool = {f"pool{i}": _text(rng, words) for i in range(5)}
    index = NearDupIndex(threshold=0.7)
    for doc_id, text in pool.items():
        index.add(doc_id, text, signature(text))
    copy, fresh = _edit(pool["pool3"], rng, 3), _text(rng, words)
    assert index.match(copy, signature(copy)) == "pool3"
    assert index.match(fresh, signature(fresh)) is None
    assert (signature(fresh) == Signer()(fresh)).all() and len(signature(fresh)) == 128


def test_exact_digest_separates_texts_that_differ_anywhere():
    assert exact_digest("same text") == exact_digest("same text")
    assert exact_digest("same text") != exact_digest("same text ") and len(exact_digest("x")) == 16


def _incremental_cluster(ids, sigs, threshold, num_perm, texts, ngram):
    """The reference: NearDupIndex (datasketch LSH) run document by document, as the data stage did."""
    index, out = NearDupIndex(threshold, num_perm, ngram), {}
    for doc_id, sig, text in zip(ids, sigs, texts):
        keeper = index.match(text, sig)
        if keeper is None:
            index.add(doc_id, text, sig)
        else:
            out[doc_id] = keeper
    return out


def test_batch_cluster_gives_the_incremental_index_answers():
    """Copies at every distance around the threshold, chains (a copy of a copy) and unrelated texts:
    the banded batch clustering must propose and confirm exactly what the datasketch index does."""
    rng = random.Random(7)
    words = [f"w{i}" for i in range(800)]
    texts, ids = [], []
    for i in range(40):
        base = _text(rng, words, 200)
        texts.append(base)
        ids.append(f"d{i}")
        for j, edits in enumerate(rng.sample(range(1, 60), 3)):
            texts.append(_edit(texts[-1] if j == 2 else base, rng, edits))
            ids.append(f"d{i}-{j}")
    order = rng.sample(range(len(texts)), len(texts))
    ids, texts = [ids[i] for i in order], [texts[i] for i in order]
    sign = Signer(128, 5)
    sigs = [sign(t) for t in texts]
    for threshold in (0.5, 0.7, 0.8, 0.9):
        want = _incremental_cluster(ids, sigs, threshold, 128, texts, 5)
        assert want, threshold  # the corpus does contain near-duplicates at this threshold
        assert cluster(ids, sigs, threshold, 128, [lambda t=t: t for t in texts], 5) == want, threshold


def test_keeper_shingles_hold_a_budget_of_shingles_not_of_sets():
    """Keepers are walked longest first: a bound in sets let the longest texts of the corpus pile up. The
    cache holds at most `budget` shingles (or the one set in use), and gives back the same sets."""
    from domaintune.governance.neardup import KeeperShingles

    texts = {k: " ".join(f"w{k}x{i}" for i in range(n)) for k, n in enumerate([3000, 2500, 400, 60, 900, 2000])}
    calls: list[int] = []
    cache = KeeperShingles(5, lambda k: calls.append(k) or texts[k], budget=1000)
    for k in [0, 1, 2, 3, 3, 4, 2, 5, 3]:
        assert cache[k] == shingles(texts[k], 5)
        held = [len(s) for s in cache._sets.values()]
        assert cache.held == sum(held) and (cache.held <= 1000 or len(held) == 1), held
    assert calls == [0, 1, 2, 3, 4, 2, 5, 3]  # the second 3 was held; 2 came back after 4 pushed it out
