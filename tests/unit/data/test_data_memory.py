"""The corpus-wide merge holds no texts (it held every kept record, about 5x the corpus): its traced peak
memory stays well under the size of the corpus it merges; and, with what it knows per document in an
on-disk index, its peak does not grow with the number of documents."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from domaintune.artifacts import RunDir
from domaintune.data import run

WORDS = [
    "account", "balance", "transfer", "rate", "fee", "branch", "loan", "deposit", "card", "credit", "term",
    "contract", "guarantee", "customer", "payment", "currency", "exchange", "interest", "mortgage", "savings",
    "statement",
]


def corpus(n: int, words: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(words))} for i in range(n)]
    docs += [dict(docs[i], id=f"copy{i}") for i in range(0, n, 10)]  # exact copies: the corpus steps work
    return docs


@pytest.mark.slow
def test_merge_peak_memory_stays_under_the_corpus(tmp_path, write_jsonl, make_config, monkeypatch):
    import domaintune.data.stage as stage

    docs = corpus(40, 6000)
    text_bytes = sum(len(d["text"]) for d in docs)  # ~1.8 MB
    write_jsonl(tmp_path / "raw" / "docs.jsonl", docs)
    cfg = make_config([{"path": "raw", "stream": "s", "id_field": "id"}], max_reject_fraction=1.0)
    run(cfg, RunDir(tmp_path / "run"))  # reads the corpus into shards (and imports everything)
    # Measured up to the report: its plots allocate a fixed megabyte or so whatever the corpus size.
    before_report: list[int] = []
    report = stage._report
    monkeypatch.setattr(stage, "_report", lambda *a: (before_report.append(tracemalloc.get_traced_memory()[1]),
                                                      report(*a)))
    tracemalloc.start()
    try:
        run(cfg, RunDir(tmp_path / "run"))  # the shards are reused: this is loading, dedup, split, lineage
    finally:
        tracemalloc.stop()
    (peak,) = before_report
    assert peak < text_bytes / 2, f"merge peak {peak / 1e6:.2f} MB for {text_bytes / 1e6:.2f} MB of text"


def _traced_rerun_peak(root, n: int, write_jsonl, make_config) -> int:
    """Traced peak of a data stage re-run (the shards reused: the merge and every output) on `n` documents
    plus near and exact copies of some of them. The report's plots are left out: they allocate a noisy
    megabyte or so whatever the corpus, and leave some of it to the garbage collector."""
    import gc

    import domaintune.data.stage as stage

    rng = random.Random(n)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS) + rng.choice(WORDS) for _ in range(60)),
             "quality_score": rng.random(), "dept": ("a", "b")[i % 2]} for i in range(n)]
    docs += [dict(docs[i], id=f"copy{i}") for i in range(0, n, 10)]
    for i in range(5, n, 10):  # near copies: one word changed
        words = docs[i]["text"].split()
        words[7] = "changed"
        docs.append(dict(docs[i], id=f"near{i}", text=" ".join(words)))
    for part in range(4):
        write_jsonl(root / "raw" / f"part{part}.jsonl", docs[part::4])
    cfg = make_config([{"path": str(root / "raw"), "stream": "s", "id_field": "id"}], max_reject_fraction=1.0,
                      split={"stratify": "meta.dept"})
    run(cfg, RunDir(root / "run"))  # builds the shards (and imports everything)
    marks: dict[str, int] = {}
    report = stage._report

    def without_plots(*args):
        marks["before"], marks["peak"] = tracemalloc.get_traced_memory()
        report(*args)
        gc.collect()
        marks["after"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    stage._report = without_plots
    tracemalloc.start()
    try:
        run(cfg, RunDir(root / "run"))
        rest = tracemalloc.get_traced_memory()[1] - marks["after"]  # what the stage allocates after the report
    finally:
        tracemalloc.stop()
        stage._report = report
    return max(marks["peak"], marks["before"] + rest)


@pytest.mark.slow
def test_merge_peak_memory_does_not_grow_with_the_corpus(tmp_path, write_jsonl, make_config, monkeypatch):
    """4x the documents, the same peak: what the merge knows per document is in its on-disk index. (The
    in-memory merge grew ~2 KB per document: +3.7 MB here; this one ~30 KB in all.) Its one cache that fills
    with the corpus, keeper shingle sets, is bounded; the bound is lowered so that both corpora fill it."""
    monkeypatch.setattr("domaintune.governance.neardup.SHINGLE_BUDGET", 500)
    small = _traced_rerun_peak(tmp_path / "small", 600, write_jsonl, make_config)
    large = _traced_rerun_peak(tmp_path / "large", 2400, write_jsonl, make_config)
    growth = large - small
    assert growth < 400_000, (f"merge peak {small / 1e6:.2f} MB at 600 docs, {large / 1e6:.2f} MB at 2,400: "
                              f"+{growth / 1e3:.0f} KB, i.e. {growth / 1800:.0f} B per extra document")


def _sqlite_highwater():
    """SQLite's own allocation high-water mark (its page caches, sorters, statements): memory tracemalloc
    does not see. `sqlite3_memory_highwater(reset)` of the library the sqlite3 module is linked to."""
    import _sqlite3
    import ctypes

    fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_highwater  # dlsym also searches its libsqlite3
    fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_int]
    return fn


def test_the_merge_index_keeps_sqlite_within_its_memory_budget(tmp_path, write_jsonl, make_config, monkeypatch):
    """SQLite's memory is bounded by the index's cache budget, not by the index: with the budget lowered to
    128 KiB, an index over twice the bound below is built, sorted, grouped and read back through the page
    cache, sorters that spill at SQLite's floor of 1 MB, and its fixed overhead (measured: 1.8 MB for a 4 MB
    index; 8.6 MB for the 5.4 MB index here with the old 16 MB budget). An uncapped cache, SQLite's default
    2 MB cache, or temporary tables and sorters kept in memory
    (`temp_store=MEMORY`) hold more."""
    import domaintune.data.merge_index as merge_index

    monkeypatch.setattr(merge_index, "CACHE_KIB", 128)
    sizes: list[int] = []
    close = merge_index.MergeIndex.close
    monkeypatch.setattr(merge_index.MergeIndex, "close",
                        lambda self: (sizes.append(self.path.stat().st_size), close(self)))
    rng = random.Random(0)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS) + rng.choice(WORDS) for _ in range(40)),
             "quality_score": rng.random()} for i in range(4000)]
    docs += [dict(docs[i], id=f"copy{i}") for i in range(0, 4000, 10)]
    for i in range(5, 4000, 10):  # near copies: one word changed
        words = docs[i]["text"].split()
        words[7] = "changed"
        docs.append(dict(docs[i], id=f"near{i}", text=" ".join(words)))
    for part in range(2):
        write_jsonl(tmp_path / "raw" / f"part{part}.jsonl", docs[part::2])
    cfg = make_config([{"path": str(tmp_path / "raw"), "stream": "s", "id_field": "id"}], max_reject_fraction=1.0)
    run(cfg, RunDir(tmp_path / "run"))  # builds the shards
    highwater = _sqlite_highwater()
    highwater(1)
    run(cfg, RunDir(tmp_path / "run"))  # the shards reused: the merge and every output read from the index
    peak, index_bytes = highwater(0), sizes[-1]
    budget = 2_500_000
    assert index_bytes > 2 * budget, f"the test index ({index_bytes / 1e6:.1f} MB) must outgrow the budget"
    assert peak < budget, (f"SQLite peaked at {peak / 1e6:.2f} MB for a {index_bytes / 1e6:.1f} MB index "
                           f"(budget {budget / 1e6:.2f} MB)")
