"""The reference for bench/data_pipeline.py: the same steps as a plain datatrove pipeline.

JsonlReader -> normalization (the same NFKC + whitespace functions, as a datatrove formatter) ->
min-chars filter -> datatrove's 4-stage MinHash dedup (signatures, buckets, cluster, filter that
re-reads the input) -> JsonlWriter. No lineage, no split, no report, no quarantine file: the
difference in wall time is the cost of our layer. datatrove's English word tokenizer needs spacy,
which is not installed; a regex tokenizer with the same rule as ours stands in.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.word_tokenizers import WordTokenizer

from domaintune.governance.normalize import normalize_unicode, normalize_whitespace

MIN_CHARS = 20


def _patch_xxhash() -> None:
    """datatrove 0.10 passes str to xxhash, which xxhash>=4 refuses; encode first (same hash)."""
    import xxhash
    from datatrove.utils.hashes import xxhash as dt_xxhash

    dt_xxhash.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode("utf-8") if isinstance(d, str) else d)
    dt_xxhash.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode("utf-8") if isinstance(d, str) else d)
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w+")


class RegexWords(WordTokenizer):
    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in text.split("\n") if s]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]


class Normalize(BaseFormatter):
    name = "normalize"

    def format(self, text: str) -> str:
        return normalize_whitespace(normalize_unicode(text, "NFKC"))


def _front(corpus: Path) -> list:
    return [JsonlReader(str(corpus), glob_pattern="*.jsonl"), Normalize(),
            LambdaFilter(lambda doc: len(doc.text) >= MIN_CHARS)]


def run_reference(corpus: Path, work: Path, workers: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    _patch_xxhash()
    files = len(list(corpus.glob("*.jsonl")))
    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    words = RegexWords()
    stages = [
        ([*_front(corpus), MinhashDedupSignature(str(work / "sigs"), config=config, language=words)], files),
        ([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)], config.num_buckets),
        ([MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=config)], 1),
        ([*_front(corpus), MinhashDedupFilter(str(work / "remove_ids"),
                                              exclusion_writer=JsonlWriter(str(work / "removed"))),
          JsonlWriter(str(work / "output"))], files),
    ]
    t0 = time.perf_counter()
    for i, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                              logging_dir=str(work / f"logs{i}")).run()
    wall = time.perf_counter() - t0
    removed = {}
    for path in (work / "removed").glob("*"):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                removed[json.loads(line)["id"]] = "minhash"
    return {"wall_s": wall, "removed": removed, "records": None, "pii": None}
