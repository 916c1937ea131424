"""Verify an export against the merged fp32 model it was made from.

Both models see the same token windows (held-out text + a fixed probe); from one forward pass each:
per-token KL(fp32 ‖ export), top-1 agreement, max |Δlogit| and perplexity; then greedy
continuations of the probe prompts (token ids compared) and decode tokens/s, same threads. The
export's own tokenizer must give the fp32 tokenizer's ids. A result outside the format's tolerance
fails the stage after the report is written (exit code 3, like the forgetting gate).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from domaintune.config.export import ToleranceConfig
from domaintune.errors import GateFailed

PROBE_PROMPTS = (
    "The bank's fee for an outgoing international wire transfer is",
    "海港银行的储蓄账户利率是",
    "def fibonacci(n):\n    ",
    "Question: What is the capital of France?\nAnswer:",
)
WINDOW = 256


class ExportOutOfTolerance(GateFailed):
    """An export drifted from the fp32 model beyond export.tolerance (exit code 3)."""


@dataclass
class Candidate:
    """A model to compare with the reference: its tokenizer and the bytes it ships as."""

    label: str
    model: object
    tokenizer: object
    size_bytes: int


def token_windows(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Windows of up to WINDOW tokens over the texts (documents joined by eos), `max_tokens` in all."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False).input_ids + ([eos] if eos is not None else [])
        if len(stream) >= max_tokens:
            break
    stream = stream[:max_tokens]
    return [stream[i:i + WINDOW] for i in range(0, len(stream), WINDOW) if len(stream[i:i + WINDOW]) > 1]


def logit_stats(ref, cand, windows: list[list[int]]) -> dict:
    import torch
    import torch.nn.functional as F

    nll_ref = nll_cand = kl = agree = n = 0.0
    max_diff = 0.0
    deltas = []  # per scored token: NLL(export) − NLL(fp32), for the standard error of the rise
    with torch.inference_mode():
        for window in windows:
            ids = torch.tensor([window])
            a = ref(ids, use_cache=False).logits[0].float()
            b = cand(ids, use_cache=False).logits[0].float()
            max_diff = max(max_diff, float((a - b).abs().max()))
            la, lb = a.log_softmax(-1), b.log_softmax(-1)
            kl += float(F.kl_div(lb, la, log_target=True, reduction="sum"))
            agree += float((a.argmax(-1) == b.argmax(-1)).sum())
            target = ids[0, 1:]
            tok_a = F.nll_loss(la[:-1], target, reduction="none")
            tok_b = F.nll_loss(lb[:-1], target, reduction="none")
            nll_ref, nll_cand = nll_ref + float(tok_a.sum()), nll_cand + float(tok_b.sum())
            deltas.append(tok_b - tok_a)
            n += len(window)
    scored = sum(len(w) - 1 for w in windows)
    ppl_ref, ppl = math.exp(nll_ref / scored), math.exp(nll_cand / scored)
    d = torch.cat(deltas).double()
    # ppl/ppl_fp32 = exp(mean Δ): near 0 its percent error is 100·SE(mean Δ). The rise of a near-lossless
    # format is of the order of this noise on a few thousand tokens; KL is the steadier measure.
    se = 100 * float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"tokens": int(n), "kl": kl / n, "top1": agree / n, "max_abs_logit_diff": max_diff,
            "ppl_fp32": ppl_ref, "ppl": ppl, "ppl_rise_pct": 100 * (ppl / ppl_ref - 1), "ppl_rise_se_pct": se}


def _greedy(model, tokenizer, prompt: str, new_tokens: int) -> tuple[list[int], float]:
    """(new token ids, seconds) of a greedy continuation that always runs `new_tokens` steps."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        seconds = time.perf_counter() - t0
    return out[0, ids.shape[1]:].tolist(), seconds


def _greedy_stats(ref, ref_tok, cand: Candidate, new_tokens: int) -> dict:
    same = 0
    t_ref = t_cand = 0.0
    first_diff = None
    for prompt in PROBE_PROMPTS:
        a, sa = _greedy(ref, ref_tok, prompt, new_tokens)
        b, sb = _greedy(cand.model, cand.tokenizer, prompt, new_tokens)
        t_ref, t_cand = t_ref + sa, t_cand + sb
        if a == b:
            same += 1
        elif first_diff is None:
            first_diff = {"prompt": prompt, "fp32": a, "export": b}
    total = new_tokens * len(PROBE_PROMPTS)
    return {"greedy_same": same, "greedy_prompts": len(PROBE_PROMPTS), "greedy_first_difference": first_diff,
            "tokens_per_s": total / t_cand, "tokens_per_s_fp32": total / t_ref, "speedup": t_ref / t_cand}


def same_token_ids(ref_tok, cand_tok, texts: list[str]) -> bool:
    return all(ref_tok(t, add_special_tokens=False).input_ids == cand_tok(t, add_special_tokens=False).input_ids
               for t in texts)


def compare(ref, ref_tok, ref_bytes: int, cand: Candidate, texts: list[str], max_tokens: int,
            new_tokens: int) -> dict:
    """Every measure of `cand` against the reference fp32 model (see the module docstring)."""
    ref.eval()
    cand.model.eval()
    windows = token_windows(ref_tok, list(PROBE_PROMPTS) + texts, max_tokens)
    row = {"label": cand.label, "bytes": cand.size_bytes, "bytes_fp32": ref_bytes,
           "smaller": ref_bytes / cand.size_bytes,
           "same_token_ids": same_token_ids(ref_tok, cand.tokenizer, list(PROBE_PROMPTS) + texts[:20])}
    row.update(logit_stats(ref, cand.model, windows))
    row.update(_greedy_stats(ref, ref_tok, cand, new_tokens))
    return row


def violations(row: dict, tol: ToleranceConfig) -> list[str]:
    """What is outside the tolerance, one clause each (empty: within it)."""
    out = []
    if not row["same_token_ids"]:
        out.append("its tokenizer gives other token ids than the fp32 model's")
    if row["ppl_rise_pct"] > tol.max_ppl_rise_pct:
        out.append(f"perplexity +{row['ppl_rise_pct']:.3f}% > {tol.max_ppl_rise_pct}%")
    if row["kl"] > tol.max_kl:
        out.append(f"KL {row['kl']:.3g} > {tol.max_kl}")
    if row["top1"] < tol.min_top1:
        out.append(f"top-1 agreement {row['top1']:.3f} < {tol.min_top1}")
    return out


def check(rows: list[dict], report_path: Path) -> None:
    """Raise ExportOutOfTolerance naming every failing export (the report is already written)."""
    failed = [f"{r['label']}: {'; '.join(r['violations'])}" for r in rows if r["violations"]]
    if failed:
        raise ExportOutOfTolerance(f"export verification failed ({report_path}): " + " | ".join(failed)
                                   + ". Loosen export.tolerance.<format> only if the loss is acceptable, or "
                                     "drop the format from export.gguf / export.quantize")
