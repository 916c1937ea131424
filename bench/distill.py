"""Distillation: a half-depth SmolLM2 student trained with logit KD vs the same student trained with
plain cross-entropy, at equal steps, rows and tokens, in one process (distill/ stage code: the
layer-pruned init, the cached top-k teacher pass, the training loop).

Data: the quickstart's bank documents, packed into 128-token rows — with `--data runs/quickstart/data`
the data stage's domain train split (students) and test split (held-out, never seen by the tuned
teacher); with `--data examples/quickstart/data` the raw corpus split by document. Teacher: `--model`,
the quickstart's tuned model (runs/quickstart/export/model after `make demo`) or the SmolLM2 import. Reported:
domain held-out perplexity of teacher / pruned init / CE student / KD student, the bootstrap 95 %
interval (over held-out documents) of PPL(CE) − PPL(KD), parameters and decode tokens/s vs teacher.

    python bench/distill.py --model runs/quickstart/export/model --data runs/quickstart/data --steps 24
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch

from domaintune.config.distill import DistillConfig, StudentConfig
from domaintune.distill import teacher_cache
from domaintune.distill.stage import train_student
from domaintune.distill.student import prune_layers

ROW = 128


def _read(path: Path) -> list[str]:
    docs = [json.loads(x)["text"] for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    random.Random(0).shuffle(docs)
    return docs


def _split(data: Path, n_held: int) -> tuple[list[str], list[str], str]:
    """(held-out, train) bank documents: a run's data stage splits when `data` is runs/<name>/data
    (held-out = its test split, which the tuned teacher never trained on), else a split of the raw corpus."""
    if (data / "domain" / "test.jsonl").is_file():
        return (_read(data / "domain" / "test.jsonl")[:n_held], _read(data / "domain" / "train.jsonl"),
                f"{data}/domain test split (train split for the students)")
    docs = _read(data / "domain" / "bank_docs.jsonl")
    return docs[:n_held], docs[n_held:], f"{data}/domain/bank_docs.jsonl, split by document"


def _rows(tok, docs: list[str], n_rows: int):
    from datasets import Dataset

    stream: list[int] = []
    for d in docs:
        stream += tok(d, add_special_tokens=False).input_ids + [tok.eos_token_id]
        if len(stream) >= n_rows * ROW:
            break
    rows = [stream[i:i + ROW] for i in range(0, n_rows * ROW, ROW)]
    return Dataset.from_list([{"input_ids": r, "segment_lengths": [len(r)], "segment_streams": [0], "bucket": ROW,
                               "length": len(r)} for r in rows])


def _doc_nll(model, tok, docs: list[str], n_tokens: int) -> list[tuple[float, int]]:
    """(summed NLL, predicted tokens) per held-out document (its first `n_tokens` tokens)."""
    out = []
    model.eval()
    with torch.inference_mode():
        for d in docs:
            ids = torch.tensor([tok(d, add_special_tokens=False).input_ids[:n_tokens]])
            loss = model(ids, labels=ids, use_cache=False).loss
            out.append((float(loss) * (ids.shape[1] - 1), ids.shape[1] - 1))
    return out


def _ppl(rows: list[tuple[float, int]], idx=None) -> float:
    idx = range(len(rows)) if idx is None else idx
    return math.exp(sum(rows[i][0] for i in idx) / sum(rows[i][1] for i in idx))


def _decode_tps(model, tok, n: int = 32) -> float:
    ids = tok("The bank's fee for an international wire transfer is", return_tensors="pt").input_ids
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--layers", type=int, default=15)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--prune", choices=["spread", "deep_block"], default="deep_block")
    ap.add_argument("--heldout-docs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--doc-tokens", type=int, default=256, help="held-out tokens scored per document")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}  threads: 1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    teacher = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    held, train_docs, origin = _split(args.data, args.heldout_docs)
    print(f"held-out: {len(held)} documents of {origin}", flush=True)
    d = DistillConfig(student=StudentConfig(layers=args.layers, prune=args.prune), steps=args.steps, batch_rows=4,
                      lr=args.lr)
    ds = _rows(tok, train_docs, d.steps * d.batch_rows)
    plan = [list(range(i * 4, i * 4 + 4)) for i in range(d.steps)]  # every row once: equal tokens for both
    t0 = time.perf_counter()
    cache = teacher_cache.build(teacher, ds, list(range(len(ds))), d.top_k, d.temperature, tok.eos_token_id, None)
    print(f"teacher top-{d.top_k} pass over {len(ds)} rows x {ROW} tokens: {time.perf_counter() - t0:.0f}s", flush=True)
    results = {"teacher": _doc_nll(teacher, tok, held, args.doc_tokens)}
    init, chosen = prune_layers(teacher, args.layers, args.prune)
    results["pruned init"] = _doc_nll(init, tok, held, args.doc_tokens)
    del init
    students = {}
    for name, c in (("CE", None), ("KD", cache)):
        torch.manual_seed(0)
        student, _ = prune_layers(teacher, args.layers, args.prune)
        for p in student.parameters():
            p.requires_grad_(True)
        t0 = time.perf_counter()
        train_student(student, ds, plan, d, tok.eos_token_id, c, log_every=10)
        print(f"{name} student: {d.steps} steps in {time.perf_counter() - t0:.0f}s", flush=True)
        results[name] = _doc_nll(student, tok, held, args.doc_tokens)
        print(f"{name} student domain held-out ppl {_ppl(results[name]):.3f}", flush=True)
        students[name] = student
    for name, rows in results.items():
        print(f"domain held-out ppl ({len(held)} docs)  {name:12s} {_ppl(rows):8.3f}")
    rng = random.Random(0)
    diffs = []
    for _ in range(2000):
        idx = [rng.randrange(len(held)) for _ in held]
        diffs.append(_ppl(results["CE"], idx) - _ppl(results["KD"], idx))
    diffs.sort()
    lo, hi = diffs[50], diffs[1949]
    print(f"PPL(CE) - PPL(KD) = {_ppl(results['CE']) - _ppl(results['KD']):.3f}, bootstrap 95% interval "
          f"[{lo:.3f}, {hi:.3f}] ({'excludes' if lo > 0 or hi < 0 else 'includes'} 0)")
    n_t = sum(p.numel() for p in teacher.parameters())
    n_s = sum(p.numel() for p in students["KD"].parameters())
    tps_t, tps_s = _decode_tps(teacher, tok), _decode_tps(students["KD"].eval(), tok)
    print(f"layers kept {chosen}; params {n_s / 1e6:.1f}M vs teacher {n_t / 1e6:.1f}M ({n_s / n_t:.0%}); "
          f"decode {tps_s:.1f} tok/s vs teacher {tps_t:.1f} ({tps_s / tps_t:.2f}x)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
