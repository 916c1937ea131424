"""Synthesis throughput and filter speed (one torch thread).

    python bench/synth_throughput.py --model MODEL_DIR [--prompts 32] [--max-new-tokens 48] [--repeats 1]
    python bench/synth_throughput.py --filters-only

1. Teacher throughput: the same teacher and the same 32 doc_qa question prompts (built from the
   quickstart's bank documents by the synth templates), sampled T=0.8 with the same per-batch seeds,
   (a) baseline: a plain batch-1 loop of `model.generate`, (b) synth's path: LocalTeacher at batch 16
   through the exactly-once journal (fsync per batch included). Prints samples/s and new tokens/s of
   each and the ratio.
2. Filters: ROUGE-L novelty (threshold 0.7, CJK-aware) + MinHash near-dup over 10,000 synthetic
   EN/ZH instructions; prints wall time and how many were kept.
The load average is printed first and last: these numbers are contended unless it is near 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _prompts(n: int) -> list[list[dict]]:
    import subprocess

    from domaintune.synth import prompts
    from domaintune.synth.methods import chunk_text, user

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "examples/quickstart/build_corpus.py"), "--small", "--out", tmp],
                       check=True, capture_output=True)
        docs = [json.loads(line) for line in (Path(tmp) / "domain" / "bank_docs.jsonl").read_text().splitlines()]
    chunks = [c for d in docs if d.get("lang", "en") == "en" for c in chunk_text(d["text"], 400)]
    return [user(prompts.render("doc_qa_question", "en", chunk=c)) for c in chunks[:n]]


def bench_teacher(model_dir: str, n: int, max_new: int, batch: int) -> dict:
    import torch

    from domaintune.synth.journal import Journal, Unit, batch_seed, run_phase
    from domaintune.synth.teachers import LocalTeacher

    torch.set_num_threads(1)
    teacher = LocalTeacher.load(model_dir, threads=1)
    sampling = type("S", (), {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": max_new})()
    units = [Unit(f"u{i}", p) for i, p in enumerate(_prompts(n))]
    teacher.generate(units[:2], 0, sampling)  # warm-up
    t0, tokens = time.perf_counter(), 0
    for u in units:  # baseline: one prompt per generate call
        tokens += teacher.generate([u], batch_seed([u.id]), sampling)[0]["new_tokens"]
    base_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = run_phase(units, Journal(Path(tmp)), lambda b, seed: teacher.generate(b, seed, sampling), batch)
        ours_s = time.perf_counter() - t0
    ours_tokens = sum(r["new_tokens"] for r in rows)
    return {"prompts": n, "batch": batch, "baseline_samples_per_s": n / base_s,
            "baseline_tokens_per_s": tokens / base_s,
            "synth_samples_per_s": n / ours_s, "synth_tokens_per_s": ours_tokens / ours_s,
            "samples_ratio": base_s / ours_s}


def _instructions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subj_en = ["wire transfer", "savings account", "credit card", "overdraft", "mortgage", "term deposit",
               "HarborPay", "ATM withdrawal", "cheque", "foreign exchange", "statement", "loan"]
    verbs_en = ["What is the fee for", "How do I apply for", "Explain the limits of", "Compare the rates of",
                "Describe the risks of", "List the documents needed for", "Who can open",
                "When is interest paid on"]
    subj_zh = ["电汇", "储蓄账户", "信用卡", "透支", "房贷", "定期存款", "海港付", "取款", "支票", "外汇",
               "对账单", "贷款"]
    verbs_zh = ["的手续费是多少？", "怎么申请？", "的限额是多少？", "的利率如何比较？", "有哪些风险？",
                "需要哪些材料？"]
    tiers = ["Standard", "Premier", "Private Banking", "student", "business", "joint"]
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            out.append(f"{rng.choice(verbs_en)} a {rng.choice(tiers)} customer's {rng.choice(subj_en)} "
                       f"{rng.choice(['in 2025', 'online', 'abroad', 'this month', 'by phone', ''])}"
                       f"{rng.randint(1, 400)}?")
        else:
            out.append(f"{rng.choice(['标准客户', '尊享客户', '学生', '企业'])}{rng.choice(subj_zh)}"
                       f"{rng.choice(['', '在线', '境外'])}{rng.choice(verbs_zh)}{rng.randint(1, 400)}")
    return out


def bench_filters(n: int) -> dict:
    from domaintune.synth import filters

    texts = _instructions(n)
    pairs = [{"id": str(i), "question": q, "answer": f"See the {i % 97} fee schedule."} for i, q in enumerate(texts)]
    t0 = time.perf_counter()
    kept, _ = filters.rouge_novel(pairs, seeds=texts[:20], threshold=0.7)
    rouge_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    final = filters.near_duplicates(kept, 0.8, 3)
    near_s = time.perf_counter() - t0
    return {"instructions": n, "rouge_kept": len(kept), "neardup_kept": len(final), "rouge_s": rouge_s,
            "neardup_s": near_s, "total_s": rouge_s + near_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--filters-only", action="store_true")
    ap.add_argument("--instructions", type=int, default=10_000)
    args = ap.parse_args()
    print(f"load average at start: {_load()}")
    f = bench_filters(args.instructions)
    print(f"filters: {f['instructions']:,} instructions -> ROUGE-L kept {f['rouge_kept']:,} in {f['rouge_s']:.1f} s, "
          f"near-dup kept {f['neardup_kept']:,} in {f['neardup_s']:.1f} s; total {f['total_s']:.1f} s (target < 60 s)")
    if not args.filters_only:
        if not args.model:
            ap.error("--model MODEL_DIR is needed for the teacher benchmark (or --filters-only)")
        runs = [bench_teacher(args.model, args.prompts, args.max_new_tokens, args.batch) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"teacher: {args.prompts} prompts, {args.max_new_tokens} new tokens max, 1 thread; "
              f"batch-1 loop {med['baseline_samples_per_s']:.3f} samples/s ({med['baseline_tokens_per_s']:.1f} tok/s); "
              f"synth batch {args.batch} + journal {med['synth_samples_per_s']:.3f} samples/s "
              f"({med['synth_tokens_per_s']:.1f} tok/s); ratio {med['samples_ratio']:.2f}x (target >= 4x)")
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
