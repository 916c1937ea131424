"""Continual pre-training throughput: domaintune's packing path vs named baselines.

One process, one model (a small Llama built from a config, the same initial weights for every
run), one corpus per length profile, one token budget. Variants are interleaved within each
repeat (rotated order), and every variant trains one epoch over the same token ids.

    python bench/cpt_throughput.py [--tokens 60000] [--repeats 3] [--threads 1]
        [--profiles lognormal,narrow] [--variants a,b,c,d,f] [--json out.json]

Metrics per variant: non-padding tokens/s over the train() call, padding fraction of the
batched tensors, peak RSS (process-wide ru_maxrss and the per-variant psutil delta), and the
held-out loss per document after training (every document run alone, use_cache=False).
See bench/README.md for the results and how to read them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _checks import cross_document_check, heldout_loss  # noqa: E402
from _corpus import Corpus, build_corpora, load_tokenizer, source_records  # noqa: E402
from _variants import NAMES, make_setup, packed_dataset, run_variant, trl_available  # noqa: E402

console = Console(width=max(120, Console().width))
NOT_MEASURED_E = ("(e) LLaMA-Factory neat_packing: not measured in this run - it needs its own venv "
                  "(transformers 4.57.1, trl 0.24.0, peft 0.18.1 and a torchaudio stub), "
                  "which cannot share this process with transformers 5.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=60000, help="training token budget per profile")
    p.add_argument("--heldout-tokens", type=int, default=6000, help="held-out tokens per profile")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--profiles", default="lognormal,narrow")
    p.add_argument("--variants", default="a,b,c,d,f")
    p.add_argument("--batch-tokens", type=int, default=2048, help="approx. real tokens per optimizer step")
    p.add_argument("--buckets", default="128,256,512,1024", help="ours: row lengths (the max is the max length)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", choices=("compact", "full"), default="compact",
                   help="compact: renumber the ids the corpus uses (see _corpus.compact_vocab)")
    p.add_argument("--json", type=Path, help="write all measurements here")
    return p.parse_args(argv)


def quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def resolve_variants(spec: str) -> list[str]:
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in keys if k not in NAMES and k != "e"]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {','.join(NAMES)}")
    console.print(NOT_MEASURED_E)
    if "d" in keys and not trl_available():
        console.print("(d) TRL SFTTrainer packing=True: skipped: trl not installed")
    return [k for k in keys if k in NAMES and (k != "d" or trl_available())]


def warm_up(setup, corpus: Corpus, variants: list[str]) -> None:
    """One unmeasured mini-run per variant: lazy imports and first-call allocations land here."""
    small = Corpus(corpus.profile, corpus.train[:6], [], corpus.vocab_size, corpus.pad_id, corpus.eos_id)
    for key in variants:
        run_variant(key, setup, small)
    gc.collect()


def measure_profile(setup, corpus: Corpus, variants: list[str], repeats: int) -> dict:
    runs = {k: [] for k in variants}
    losses, check = {}, None
    for r in range(repeats):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for key in order:
            run, model = run_variant(key, setup, corpus)
            runs[key].append(run)
            console.print(f"  [dim]repeat {r + 1}/{repeats}[/] {NAMES[key]:<28} {run.tokens_per_s:7.0f} tok/s "
                          f"{run.steps:3d} steps  {run.wall_s:6.1f} s  padding {run.padding:6.1%}")
            if r == 0:
                losses[key] = heldout_loss(model, corpus.heldout)
                if key == "f":
                    check = _check_ours(model, setup, corpus)
            del model
            gc.collect()
    return {"runs": runs, "heldout": losses, "check": check}


def _check_ours(model, setup, corpus: Corpus) -> dict:
    with tempfile.TemporaryDirectory(dir=setup.workdir) as out:
        dataset = packed_dataset(setup, corpus, Path(out) / "packed")
        return cross_document_check(model, dataset, setup.batch_tokens, setup.seed, corpus.pad_id)


def summarize(measured: dict) -> dict:
    runs = measured["runs"]
    return {key: _summarize_variant(key, rs, runs.get("a"), measured["heldout"].get(key))
            for key, rs in runs.items()}


def _summarize_variant(key: str, rs: list, base: list | None, heldout: dict | None) -> dict:
    tps = [r.tokens_per_s for r in rs]
    deltas = [r.rss_delta_mb for r in rs if r.rss_delta_mb is not None]
    s = {"name": NAMES[key], "tokens_per_s_median": statistics.median(tps), "tokens_per_s_min": min(tps),
         "tokens_per_s_max": max(tps), "tokens": rs[0].tokens, "padding_fraction": rs[0].padding,
         "steps": rs[0].steps, "tokens_per_step": rs[0].tokens / rs[0].steps,
         "prep_s_median": statistics.median(r.prep_s for r in rs), "maxrss_mb": max(r.maxrss_mb for r in rs),
         "rss_delta_mb_max": max(deltas, default=None), "heldout_loss": heldout,
         "runs": [vars(r) | {"tokens_per_s": r.tokens_per_s} for r in rs]}
    if base:
        # Repeat r of every variant ran in the same round, so per-round ratios cancel slow drifts.
        paired = [r.tokens_per_s / b.tokens_per_s for r, b in zip(rs, base)]
        s |= {"ratio_vs_a": s["tokens_per_s_median"] / statistics.median(b.tokens_per_s for b in base),
              "paired_ratio_vs_a_min": min(paired), "paired_ratio_vs_a_max": max(paired)}
    return s


def print_table(profile: str, corpus: Corpus, summary: dict) -> None:
    table = Table(title=f"profile '{profile}': {len(corpus.train)} docs, {corpus.train_tokens:,} tokens",
                  title_justify="left")
    for col in ("variant", "tok/s median [min-max]", "x (a) [paired range]", "padding", "steps (tok/step)",
                "peak RSS MB", "dRSS MB", "held-out loss"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for s in summary.values():
        ratio = (f"{s['ratio_vs_a']:.2f} [{s['paired_ratio_vs_a_min']:.2f}-{s['paired_ratio_vs_a_max']:.2f}]"
                 if "ratio_vs_a" in s else "-")
        loss = s["heldout_loss"]
        table.add_row(s["name"], f"{s['tokens_per_s_median']:.0f} [{s['tokens_per_s_min']:.0f}-"
                      f"{s['tokens_per_s_max']:.0f}]", ratio, f"{s['padding_fraction']:.1%}",
                      f"{s['steps']} ({s['tokens_per_step']:.0f})",
                      f"{s['maxrss_mb']:.0f}", "-" if s["rss_delta_mb_max"] is None else f"{s['rss_delta_mb_max']:.0f}",
                      f"{loss['doc_mean']:.4f}" if loss else "-")
    console.print(table)
    _print_peer_line(summary)


def _print_peer_line(summary: dict) -> None:
    peers = {k: s for k, s in summary.items() if k != "f"}
    if "f" not in summary or not peers:
        return
    best = max(peers, key=lambda k: peers[k]["tokens_per_s_median"])
    ours = summary["f"]["tokens_per_s_median"]
    vs_a = f"; vs (a): {summary['f']['ratio_vs_a']:.2f}x" if "ratio_vs_a" in summary["f"] else ""
    console.print(f"  ours vs best peer {peers[best]['name']}: "
                  f"{ours / peers[best]['tokens_per_s_median']:.2f}x tokens/s{vs_a}")


def print_check(check: dict | None) -> None:
    if not check:
        return
    ok, leak = check["use_cache=False"], check["use_cache=True"]
    console.print(f"  zero cross-document attention (ours, {check['docs']} docs in {check['rows']} packed rows, "
                  f"{check['tokens']} tokens): max |loss packed - loss alone| per doc "
                  f"{ok['max_abs_doc_loss_diff']:.2e}, per token {ok['max_abs_token_loss_diff']:.2e}; "
                  f"same batch with use_cache=True: {leak['max_abs_doc_loss_diff']:.2e} / "
                  f"{leak['max_abs_token_loss_diff']:.2e}")


def machine_info(args) -> dict:
    import accelerate
    import datasets
    import transformers

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "accelerate": accelerate.__version__, "loadavg_start": os.getloadavg()}
    if trl_available():
        import trl

        info["trl"] = trl.__version__
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_libraries()
    t_start = time.perf_counter()
    variants = resolve_variants(args.variants)
    tokenizer, tok_name = load_tokenizer()
    source, _ = source_records()
    corpora = build_corpora(tokenizer, args.profiles.split(","), args.tokens, args.heldout_tokens, args.seed,
                            args.vocab == "compact")
    report = {"settings": vars(args) | {"json": str(args.json), "tokenizer": tok_name, "source": source},
              "machine": machine_info(args), "profiles": {}}
    buckets = [int(b) for b in args.buckets.split(",")]
    with tempfile.TemporaryDirectory(prefix="cpt-bench-") as work:
        for i, corpus in enumerate(corpora):
            setup = make_setup(corpus, tokenizer, args.seed, args.lr, args.batch_tokens, buckets, Path(work),
                               args.hidden, args.layers)
            if i == 0:
                _print_header(report, setup, corpus)
                warm_up(setup, corpus, variants)
            console.rule(f"profile {corpus.profile}")
            measured = measure_profile(setup, corpus, variants, args.repeats)
            summary = summarize(measured)
            print_table(corpus.profile, corpus, summary)
            print_check(measured["check"])
            report["profiles"][corpus.profile] = {"docs": len(corpus.train), "tokens": corpus.train_tokens,
                                                  "heldout_docs": len(corpus.heldout), "variants": summary,
                                                  "cross_document_check": measured["check"]}
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - t_start
    console.print(f"total wall time {report['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


def _print_header(report: dict, setup, corpus: Corpus) -> None:
    params = sum(v.numel() for k, v in setup.init_state.items() if k != "lm_head.weight")
    report["model"] = {"params": params, "hidden": setup.config.hidden_size, "layers": setup.config.num_hidden_layers,
                       "vocab_size": corpus.vocab_size, "attn": "sdpa"}
    s = report["settings"]
    console.print(f"model: Llama {setup.config.num_hidden_layers}x{setup.config.hidden_size}, vocab "
                  f"{corpus.vocab_size} ({s['vocab']}), {params / 1e6:.1f}M params, full fine-tuning, sdpa, fp32; "
                  f"tokenizer {s['tokenizer']}; text {s['source']}; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    sys.exit(main())
