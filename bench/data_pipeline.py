"""Data stage throughput and dedup quality: domaintune's data stage vs the same steps as a plain
datatrove pipeline, on a generated corpus with planted exact duplicates, near-duplicates and PII.

    python bench/data_pipeline.py --mb 200 --workers 2 --json bench/data_pipeline.json

Each variant runs in its own subprocess (clean peak RSS); both read the same files in the same
invocation. Prints docs/s per core, duplicate precision/recall against the planted truth, PII
precision/recall (ours only: the reference has no PII step), peak RSS, and ours/reference.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _data_reference import run_reference  # noqa: E402

from domaintune.governance.neardup import shingles  # noqa: E402

FILE_MB = 8
NEAR_EDIT_RATE = 0.015  # words replaced in a near copy: ~7% of 5-gram shingles change, Jaccard ~0.87
COPY_RATE = 0.03  # share of documents that get an exact copy, and (separately) a near copy
PII_RATE = 0.10
THRESHOLD = 0.8  # data.near_dedup.threshold for ours
TRUTH_VERSION = 2


def _vocabulary() -> tuple[np.ndarray, np.ndarray]:
    import pydoc_data.topics as topics

    words = Counter(re.findall(r"[A-Za-z]+", " ".join(topics.topics.values())))
    vocab = np.array(sorted(words))
    freq = np.array([words[w] for w in vocab], dtype=np.float64)
    return vocab, freq / freq.sum()


def _document(rng: np.random.Generator, vocab: np.ndarray, probs: np.ndarray) -> list[str]:
    n = int(np.clip(rng.lognormal(np.log(400), 0.6), 60, 4000))
    return list(vocab[rng.choice(len(vocab), size=n, p=probs)])


def _text(words: list[str]) -> str:
    return "\n\n".join(" ".join(words[i:i + 60]) for i in range(0, len(words), 60))


def _plant_pii(rng, words: list[str], truth: list) -> None:
    kinds = {"email": lambda k: f"user{k}@example.com", "phone": lambda k: f"+1 415 555 {k % 10000:04d}"}
    for kind, make in kinds.items():
        value = make(int(rng.integers(1 << 30)))
        words.insert(int(rng.integers(len(words))), value)
        truth.append([kind, value])


def build_corpus(out: Path, mb: int, seed: int = 0) -> dict:
    """Files of ~FILE_MB MB; copies land in later files than their originals (cross-file dups)."""
    marker = out / "truth.json"
    if marker.is_file() and json.loads(marker.read_text()).get("key") == [mb, seed, TRUTH_VERSION]:
        return json.loads(marker.read_text())
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    rng = np.random.default_rng(seed)
    vocab, probs = _vocabulary()
    truth = {"key": [mb, seed, TRUTH_VERSION], "exact": {}, "near": {}, "near_jaccard": {}, "pii": {}, "docs": 0,
             "bytes": 0}
    pending: list[tuple[str, str]] = []
    part, n = 0, 0
    while truth["bytes"] < mb * 2**20:
        rows = []
        size = 0
        while size < FILE_MB * 2**20 and truth["bytes"] + size < mb * 2**20:
            words = _document(rng, vocab, probs)
            doc_id = f"d{n}"
            n += 1
            if rng.random() < PII_RATE:
                _plant_pii(rng, words, truth["pii"].setdefault(doc_id, []))
            text = _text(words)
            rows.append({"id": doc_id, "text": text})
            if rng.random() < COPY_RATE:
                pending.append((doc_id, "exact", text.replace(" ", "  ", 3)))  # same once normalized
            if rng.random() < COPY_RATE:
                edited = [w if rng.random() > NEAR_EDIT_RATE else str(vocab[rng.integers(len(vocab))]) for w in words]
                pending.append((doc_id, "near", _text(edited)))
                a, b = shingles(text, 5), shingles(pending[-1][2], 5)
                truth["near_jaccard"][f"near-of-{doc_id}"] = len(a & b) / len(a | b)
            size += len(text) + 30
        for orig, kind, text in pending:  # copies from earlier files go into this one
            copy_id = f"{kind}-of-{orig}"
            truth[kind][copy_id] = orig
            rows.append({"id": copy_id, "text": text})
        pending = []
        order = rng.permutation(len(rows))
        with (out / f"part-{part:05d}.jsonl").open("w", encoding="utf-8") as fh:
            for i in order:
                fh.write(json.dumps(rows[i]) + "\n")
        truth["docs"] += len(rows)
        truth["bytes"] += size
        part += 1
    marker.write_text(json.dumps(truth))
    return truth


# "ours-same": only the steps the reference runs (normalization, min length, exact + near dedup), so
# the ratio to datatrove is our layer's overhead; "ours": the full governance defaults (quality
# filters, PII redaction), which the reference does not do at all.
SAME_STEPS = {"pii": {"enabled": False},
              "quality": {k: None for k in ("min_words", "max_symbol_ratio", "max_digit_ratio", "max_repeated_lines",
                                            "max_repeated_ngrams", "max_boilerplate_lines")}}


def run_ours_same(corpus: Path, work: Path, workers: int) -> dict:
    return run_ours(corpus, work, workers, extra=SAME_STEPS)


def run_ours(corpus: Path, work: Path, workers: int, extra: dict | None = None) -> dict:
    import yaml

    from domaintune.artifacts import RunDir
    from domaintune.config import load_config
    from domaintune.data.stage import run

    cfg_path = work / "domaintune.yaml"
    work.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump({
        "name": "bench", "runs_dir": str(work / "runs"), "model": {"base": "some/id"},
        "mix": {"mixture": {"web": 1}, "tokens": 1000},
        "data": {"sources": [{"path": str(corpus / "*.jsonl"), "stream": "web", "id_field": "id"}],
                 "engine": {"workers": workers}, "near_dedup": {"threshold": THRESHOLD, "num_perm": 112},
                 "pii": {"enabled": True}, **(extra or {})}}))
    cfg = load_config(cfg_path)
    run_dir = RunDir(cfg.run_path)
    import shutil

    shutil.rmtree(run_dir.root, ignore_errors=True)
    t0 = time.perf_counter()
    run(cfg, run_dir)
    wall = time.perf_counter() - t0
    removed = {}
    with (run_dir.root / "data" / "lineage.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            entry = json.loads(line)
            if entry["outcome"] == "duplicate":
                removed[entry["id"]] = entry["reason"]
    stats = json.loads((run_dir.root / "data" / "stats.json").read_text())
    pii_counts = {"pii.redact": stats["total"].get("pii_by_type", {})}
    return {"wall_s": wall, "removed": removed, "records": stats["total"]["records"], "pii_counts": pii_counts,
            "pii": pii_quality(run_dir.root / "data", json.loads((corpus / "truth.json").read_text()), pii_counts)}


def pii_quality(out: Path, truth: dict, counts: dict) -> dict | None:
    """Recall: planted values gone from the kept text. Precision: those over all redactions the
    PII step reports. None when no PII step ran."""
    found = sum(v for c in counts.values() for v in (c.values() if isinstance(c, dict) else [c])
                if isinstance(v, (int, float)))
    if not found:
        return None
    planted = removed = 0
    for split in ("train", "val", "test"):
        with (out / "web" / f"{split}.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                for _, value in truth["pii"].get(rec["id"], []):
                    planted += 1
                    removed += value not in rec["text"]
    return {"precision": removed / found, "recall": removed / planted if planted else 1.0}


def _child(args) -> None:
    """One variant in this process; prints one JSON line."""
    corpus, work = Path(args.corpus), Path(args.work)
    runner = {"ours": run_ours, "ours-same": run_ours_same, "datatrove": run_reference}[args.variant]
    result = runner(corpus, work, args.workers)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps({**result, "peak_rss_mb": round(own), "peak_child_rss_mb": round(kids)}))


def dedup_quality(removed: set[str], truth: dict) -> dict:
    """A removal is right if it sits in a planted cluster (an original or one of its copies); a
    cluster can lose at most all but one member. Recall counts planted copies, near-only too."""
    root = {**truth["exact"], **truth["near"]}
    members: dict[str, int] = Counter(root.values())
    right: Counter = Counter()
    for doc in removed:
        cluster = root.get(doc, doc if doc in members else None)
        if cluster is not None:
            right[cluster] += 1
    correct = sum(min(n, members[c]) for c, n in right.items())
    above = [c for c, j in truth["near_jaccard"].items() if j >= THRESHOLD]
    near_found = [c for c, orig in truth["near"].items() if right.get(orig, 0) >= 1]
    return {"precision": correct / len(removed) if removed else 1.0,
            "recall": correct / len(root) if root else 1.0,
            "near_recall": len(near_found) / len(truth["near"]) if truth["near"] else 1.0,
            "near_recall_above_threshold": len(set(near_found) & set(above)) / len(above) if above else 1.0,
            "near_pairs_above_threshold": len(above),
            "clusters_emptied": sum(1 for c, n in right.items() if n > members[c])}


def _spawn(variant: str, corpus: Path, work: Path, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--corpus", str(corpus), "--work", str(work),
           "--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cache", default=str(ROOT / "bench" / ".cache" / "data_pipeline"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", default="ours,ours-same,datatrove", help="comma-separated subset")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.variant = args.child
        _child(args)
        return
    cache = Path(args.cache)
    t0 = time.perf_counter()
    truth = build_corpus(cache / f"corpus-{args.mb}mb", args.mb)
    print(f"corpus: {truth['docs']:,} docs, {truth['bytes'] / 2**20:.0f} MB, {len(truth['exact']):,} exact + "
          f"{len(truth['near']):,} near copies, {len(truth['pii']):,} docs with PII "
          f"(built/loaded in {time.perf_counter() - t0:.0f}s)")
    variants = args.variants.split(",")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            res = _spawn(variant, cache / f"corpus-{args.mb}mb", cache / f"work-{variant}", args.workers)
            res["quality"] = dedup_quality(set(res.pop("removed")), truth)
            runs[variant].append(res)
            print(f"  repeat {r + 1} {variant}: {res['wall_s']:.1f}s")
    report(runs, truth, args)
    pii_recall_table()


def pii_recall_table() -> None:
    """The labelled PII sets (bench/pii_eval.py), with and without the opt-in context suppression."""
    sys.path.insert(0, str(ROOT / "bench"))
    from pii_eval import HERE, load, print_recall, recall_table

    data = HERE / "data"
    print_recall(recall_table({"pii_eval": load(data / "pii_eval.jsonl"),
                               "pii_context_eval": load(data / "pii_context_eval.jsonl")}))


def report(runs: dict[str, list[dict]], truth: dict, args) -> None:
    walls = {v: statistics.median(r["wall_s"] for r in rs) for v, rs in runs.items()}
    print(f"\n{'variant':<11}{'wall s':>8}{'docs/s/core':>13}{'dup P':>8}{'dup R':>8}{'near R':>8}{'R@J>=t':>8}"
          f"{'PII P/R':>11}{'RSS MB':>8}{'child RSS':>10}")
    for variant, rs in runs.items():
        q = rs[0]["quality"]
        p = rs[0].get("pii")
        pii = f"{p['precision']:.2f}/{p['recall']:.2f}" if p else "n/a"
        print(f"{variant:<11}{walls[variant]:>8.1f}{truth['docs'] / walls[variant] / args.workers:>13.0f}"
              f"{q['precision']:>8.3f}{q['recall']:>8.3f}{q['near_recall']:>8.3f}"
              f"{q['near_recall_above_threshold']:>8.3f}{pii:>11}"
              f"{max(r['peak_rss_mb'] for r in rs):>8}{max(r['peak_child_rss_mb'] for r in rs):>10}")
    ratios = {}
    for ours in ("ours-same", "ours"):
        if ours in walls and "datatrove" in walls:
            r = ratios[ours] = walls[ours] / walls["datatrove"]
            print(f"\n{ours} / plain datatrove wall time = {r:.2f}x (median of {args.repeats}; "
                  f"{args.workers} worker(s))")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "truth_counts": {
            k: (len(v) if isinstance(v, dict) else v) for k, v in truth.items()}, "runs": runs,
            "wall_ratio_over_datatrove": ratios}, indent=2))


if __name__ == "__main__":
    main()
