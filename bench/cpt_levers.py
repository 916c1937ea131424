"""One CPT training step on a real model, per speed lever: step time, peak RSS and loss equality.

Each variant runs in its own process (peak RSS is process-wide), variants alternate within each
repeat, on the same packed row built from the data stage's cleaned train splits (documents from
the streams in turn, cut to exactly `--row-len` tokens, position ids restarting per document).
LoRA r16 alpha 32 on all linear layers, fp32, AdamW step included.

    python bench/cpt_levers.py --model examples/quickstart/models/smollm2-135m-instruct \\
        --data examples/quickstart/runs/quickstart/data [--variants mask,segments] [--steps 3] \\
        [--repeats 1] [--threads 2] [--json out.json]

Variants: `mask` = transformers' sdpa with its 4D block-diagonal mask (the path before issue 19),
`segments` = per-document sdpa calls (training/packed_attention.py). The step-1 per-document
losses of every variant are compared with each other and with every document run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STREAMS = ("domain", "english", "chinese")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the data stage's output folder (<stream>/train.jsonl)")
    p.add_argument("--variants", default="mask,segments")
    p.add_argument("--row-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3, help="timed steps per run (after one untimed warm-up step)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--row-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_row(model_dir: Path, data_dir: Path, row_len: int) -> dict:
    """Documents from the streams in turn until the row is full; the last one is cut to fit."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = {s: [json.loads(line)["text"] for line in (data_dir / s / "train.jsonl").open(encoding="utf-8")]
            for s in STREAMS}
    ids, lengths, streams, i = [], [], [], 0
    while len(ids) < row_len:
        s = i % len(STREAMS)
        doc = tok(docs[STREAMS[s]][i // len(STREAMS)])["input_ids"] + [tok.eos_token_id]
        doc = doc[:row_len - len(ids)]
        if len(doc) >= 2:
            ids += doc
            lengths.append(len(doc))
            streams.append(s)
        i += 1
    return {"input_ids": ids, "segment_lengths": lengths, "segment_streams": streams}


def child(args) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from domaintune.training.collate import IGNORE, collate_packed, token_losses
    from domaintune.training.packed_attention import packed_attention

    torch.set_num_threads(args.threads)
    row = json.loads(args.row_file.read_text())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa", dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    batch = collate_packed([row], pad_id=0)
    bounds, start = [], 0
    for n in row["segment_lengths"]:
        bounds.append((start, start + n))
        start += n
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, per_doc = [], None
    with packed_attention(model, args.child):
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
            losses = token_losses(logits, batch["labels"])
            (losses.sum() / int((batch["labels"] != IGNORE).sum())).backward()
            if step == 0:
                per_doc = [float(losses[0, a:b - 1].sum()) for a, b in bounds]
                save_file({n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()
                           if p.grad is not None}, str(args.out.with_suffix(".grads.safetensors")))
            optim.step()
            optim.zero_grad(set_to_none=True)
            if step:
                times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.write_text(json.dumps({"times": times, "peak_rss_mb": peak, "loaded_rss_mb": rss_loaded,
                                    "per_doc": per_doc}))


def alone_losses(args, row: dict) -> list[float]:
    """Every document of the row run alone through the untrained model (LoRA B starts at 0)."""
    import torch
    from transformers import AutoModelForCausalLM

    from domaintune.training.collate import IGNORE, token_losses

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa", dtype=torch.float32).eval()
    out, start = [], 0
    with torch.no_grad():
        for n in row["segment_lengths"]:
            x = torch.tensor([row["input_ids"][start:start + n]])
            labels = x.clone()
            labels[0, 0] = IGNORE
            out.append(float(token_losses(model(input_ids=x, use_cache=False).logits, labels).sum()))
            start += n
    return out


def run_child(args, variant: str, row_file: Path, tmp: Path, rep: int) -> dict:
    out = tmp / f"{variant}-{rep}.json"
    cmd = [sys.executable, __file__, "--model", str(args.model), "--data", str(args.data), "--child", variant,
           "--row-file", str(row_file), "--out", str(out), "--steps", str(args.steps), "--threads", str(args.threads)]
    subprocess.run(cmd, check=True, env=os.environ | {"OMP_NUM_THREADS": str(args.threads)})
    return json.loads(out.read_text()) | {"grads": str(out.with_suffix(".grads.safetensors"))}


def max_grad_diff(a: str, b: str) -> float:
    from safetensors.torch import load_file

    ga, gb = load_file(a), load_file(b)
    return max(float((ga[k] - gb[k]).abs().max()) for k in ga)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    variants = args.variants.split(",")
    row = build_row(args.model, args.data, args.row_len)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        row_file = tmp / "row.json"
        row_file.write_text(json.dumps(row))
        runs = {v: [] for v in variants}
        for rep in range(args.repeats):
            for v in variants[rep % len(variants):] + variants[:rep % len(variants)]:  # rotated order
                runs[v].append(run_child(args, v, row_file, tmp, rep))
        alone = alone_losses(args, row)
        base = variants[0]
        report = {"row_len": args.row_len, "documents": len(row["segment_lengths"]), "threads": args.threads,
                  "steps": args.steps, "repeats": args.repeats, "load_before": load, "load_after": os.getloadavg(),
                  "variants": {}}
        base_step = min(t for r in runs[base] for t in r["times"])
        for v in variants:
            rs = runs[v]
            best = min(t for r in rs for t in r["times"])
            report["variants"][v] = {
                "step_s": [round(t, 2) for r in rs for t in r["times"]],
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs)),
                "loaded_rss_mb": round(max(r["loaded_rss_mb"] for r in rs)),
                "speedup_vs_" + base: round(base_step / best, 3),
                "max_doc_loss_diff_vs_alone": max(abs(a - b) for a, b in zip(rs[0]["per_doc"], alone)),
                "max_doc_loss_diff_vs_" + base: max(abs(a - b) for a, b in zip(rs[0]["per_doc"],
                                                                               runs[base][0]["per_doc"])),
                "max_grad_diff_vs_" + base: max_grad_diff(rs[0]["grads"], runs[base][0]["grads"])}
    print(f"one {args.row_len}-token packed row ({report['documents']} documents), {args.threads} threads, "
          f"{args.steps} timed steps x {args.repeats} repeats; load before {load[0]:.2f}, "
          f"after {report['load_after'][0]:.2f}")
    for v, r in report["variants"].items():
        print(f"  {v:>9}: step s {r['step_s']}  peak RSS {r['peak_rss_mb']} MB (loaded {r['loaded_rss_mb']})  "
              f"speed-up {r['speedup_vs_' + base]}x  per-doc loss vs alone {r['max_doc_loss_diff_vs_alone']:.2e}  "
              f"vs {base} {r['max_doc_loss_diff_vs_' + base]:.2e}  grads vs {base} {r['max_grad_diff_vs_' + base]:.2e}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
