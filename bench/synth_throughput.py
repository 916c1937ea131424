"""Synthesis throughput and filter speed (one torch thread).

    python bench/synth_throughput.py --model MODEL_DIR [--prompts 32] [--max-new-tokens 48] [--answer-tokens 80]
    python bench/synth_throughput.py --filters-only

1. Teacher throughput on doc_qa's two phases, with the stage's default sampling: 32 question prompts
   built from the quickstart's bank documents by the synth templates (T=0.8, top-p 0.95, 48 tokens),
   then 32 answer prompts (greedy, 80 tokens) made from synth's questions, the same for both sides:
   (a) baseline: a plain batch-1 loop of `model.generate`; (b) synth's path: LocalTeacher at batch 16
   through the exactly-once journal (fsync per batch included). Prints time, new tokens, samples/s
   and the ratio per phase and for both.
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


def _prompts(n: int) -> list[str]:
    """The first n English chunks (400 characters) of the quickstart's bank documents."""
    import subprocess

    from domaintune.synth.methods import chunk_text

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "examples/quickstart/build_corpus.py"), "--small", "--out", tmp],
                       check=True, capture_output=True)
        docs = [json.loads(line) for line in (Path(tmp) / "domain" / "bank_docs.jsonl").read_text().splitlines()]
    chunks = [c for d in docs if d.get("lang", "en") == "en" for c in chunk_text(d["text"], 400)]
    return chunks[:n]


def _hf_loop(teacher, units, sampling) -> tuple[float, int]:
    """The baseline: a plain batch-1 `model.generate` loop (what one writes without synth), same
    prompts and sampling parameters, seeded per prompt."""
    import torch

    tok, model, tokens = teacher.tokenizer, teacher.model, 0
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tok.pad_token_id,
                  do_sample=sampling.temperature > 0)
    kwargs.update(dict(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0) if sampling.temperature > 0
                  else dict(temperature=None, top_p=None, top_k=None))
    t0 = time.perf_counter()
    for i, u in enumerate(units):
        enc = tok(teacher.render(u), return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(i)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        tokens += len(new) - (1 if new and new[-1] == tok.eos_token_id else 0)
    return time.perf_counter() - t0, tokens


def _synth_path(teacher, units, sampling, journal_batch) -> tuple[float, int, list[dict]]:
    from domaintune.synth.journal import Journal, run_phase

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = run_phase(units, Journal(Path(tmp)), lambda b, seed: teacher.generate(b, seed, sampling),
                         journal_batch)
        return time.perf_counter() - t0, sum(r["new_tokens"] for r in rows), rows


def _unit(uid: str, template: str, chunk: str, **values: str):
    """A unit as doc_qa makes it: the chunk's part of the message is the unit's context."""
    from domaintune.synth import prompts
    from domaintune.synth.journal import Unit
    from domaintune.synth.methods import chunk_context, user

    content = prompts.render(template, "en", chunk=chunk, **values)
    return Unit(uid, user(content), context=chunk_context(content, chunk))


def bench_teacher(model_dir: str, n: int, batch: int, journal_batch: int, q_tokens: int, a_tokens: int) -> dict:
    """doc_qa's two phases with the stage's default sampling: questions (T=0.8, top-p 0.95) from
    n chunk prompts, then greedy answers to synth's questions (the same answer prompts for both)."""
    import torch

    from domaintune.synth.methods import first_line
    from domaintune.synth.teachers import ContextCache, LocalTeacher

    torch.set_num_threads(1)
    teacher = LocalTeacher.load(model_dir, threads=1, batch_size=batch)
    question = type("S", (), {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": q_tokens})()
    answer = type("S", (), {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": a_tokens})()
    chunks = _prompts(n)
    units = [_unit(f"q{i}", "doc_qa_question", c) for i, c in enumerate(chunks)]
    teacher.generate(units[:2], 0, question)  # warm-up
    _hf_loop(teacher, units[:1], question)
    teacher.contexts = ContextCache(teacher.contexts.max_bytes)  # nothing of the warm-up is reused
    out = {"prompts": n, "batch": batch, "journal_batch": journal_batch}
    q_base_s, q_base_tok = _hf_loop(teacher, units, question)
    q_s, q_tok, rows = _synth_path(teacher, units, question, journal_batch)
    answers = [_unit(f"a{i}", "doc_qa_answer", c, question=first_line(r["text"]) or "What does the text say?")
               for i, (c, r) in enumerate(zip(chunks, rows))]
    a_base_s, a_base_tok = _hf_loop(teacher, answers, answer)
    a_s, a_tok, _ = _synth_path(teacher, answers, answer, journal_batch)
    out["context_cache_hit_tokens"] = teacher.contexts.hit_tokens
    for name, base_s, base_tok, s, tok in (("questions", q_base_s, q_base_tok, q_s, q_tok),
                                           ("answers", a_base_s, a_base_tok, a_s, a_tok),
                                           ("doc_qa", q_base_s + a_base_s, q_base_tok + a_base_tok, q_s + a_s,
                                            q_tok + a_tok)):
        out[name] = {"baseline_s": base_s, "baseline_tokens": base_tok, "synth_s": s, "synth_tokens": tok,
                     "baseline_samples_per_s": n / base_s * (2 if name == "doc_qa" else 1),
                     "synth_samples_per_s": n / s * (2 if name == "doc_qa" else 1),
                     "samples_ratio": base_s / s}
    return out


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
    ap.add_argument("--max-new-tokens", type=int, default=48, help="questions (synth.doc_qa.question default)")
    ap.add_argument("--answer-tokens", type=int, default=80, help="answers (synth.doc_qa.answer default)")
    ap.add_argument("--batch", type=int, default=16, help="rows the teacher decodes together (teacher.batch_size)")
    ap.add_argument("--journal-batch", type=int, default=64, help="units per journal batch (teacher.journal_batch)")
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
        runs = [bench_teacher(args.model, args.prompts, args.batch, args.journal_batch, args.max_new_tokens,
                              args.answer_tokens)
                for _ in range(args.repeats)]
        print(f"teacher: {args.prompts} doc_qa prompts, 1 thread; plain batch-1 model.generate loop vs synth's "
              f"LocalTeacher at batch {args.batch} through the journal (journal batch {args.journal_batch}; medians of "
              f"{args.repeats}); context cache reused {runs[-1]['context_cache_hit_tokens']:,} prompt tokens")
        for phase in ("questions", "answers", "doc_qa"):
            med = {k: statistics.median(r[phase][k] for r in runs) for k in runs[0][phase]}
            print(f"  {phase:9s}: batch-1 loop {med['baseline_s']:.1f} s ({med['baseline_tokens']:.0f} new tokens, "
                  f"{med['baseline_samples_per_s']:.3f} samples/s); synth {med['synth_s']:.1f} s "
                  f"({med['synth_tokens']:.0f} new tokens, {med['synth_samples_per_s']:.3f} samples/s); "
                  f"ratio {med['samples_ratio']:.2f}x (target >= 4x)")
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
