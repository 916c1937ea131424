"""The corpus-wide merge holds ids and small fields, not the texts (it held every kept record, about
5x the corpus): its traced peak memory stays well under the size of the corpus it merges. (What
still grows per document: its id, meta, signature row and LSH bands.)"""

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
