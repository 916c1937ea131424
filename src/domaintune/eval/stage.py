"""Stage "eval": held-out perplexity and bits-per-byte per stream, base model vs tuned model.

The base model's scores are cached by fingerprint (model + data + eval settings), so
re-evaluating a new fine-tune never pays for the base model twice.
"""

from __future__ import annotations

import json
import random

from domaintune import models
from domaintune.artifacts import RunDir, StageResult, atomic_write_json, stable_hash
from domaintune.config import Config
from domaintune.console import console, progress
from domaintune.eval.perplexity import aggregate, count_requests, score_documents
from domaintune.eval.plots import plot_perplexity

STAGE = "eval"


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model)


def _within_budget(docs: list[str], tokenizer, budget: int | None) -> list[str]:
    """Whole documents, in order, until `budget` tokens are reached (the last one may cross it)."""
    if budget is None:
        return docs
    kept, total = [], 0
    for doc, ids in zip(docs, tokenizer(docs, add_special_tokens=False)["input_ids"]):
        if total >= budget:
            break
        kept.append(doc)
        total += len(ids)
    return kept


def _held_out(cfg: Config, run_dir: RunDir, tokenizer) -> dict[str, list[str]]:
    """Texts per stream from the configured split: a seeded subset within max_docs / max_tokens."""
    index = json.loads(run_dir.output("data", "streams", by=STAGE).read_text(encoding="utf-8"))
    texts = {}
    for stream in cfg.eval.streams or sorted(index):
        with (run_dir.root / "data" / index[stream][cfg.eval.split]).open(encoding="utf-8") as fh:
            docs = [json.loads(line)["text"] for line in fh]
        random.Random(f"{cfg.seed}:{stream}").shuffle(docs)
        docs = docs[: cfg.eval.max_docs] if cfg.eval.max_docs else docs
        texts[stream] = _within_budget(docs, tokenizer, cfg.eval.max_tokens)
    return texts


def _score_model(label: str, model, tokenizer, texts: dict[str, list[str]], cfg: Config) -> dict:
    e = cfg.eval
    results = {}
    with progress() as bar:
        for stream, docs in texts.items():
            n = count_requests(tokenizer, docs, e.window, e.stride)
            task = bar.add_task(f"{label}: {stream}", total=n, info="")
            scores = score_documents(model, tokenizer, docs, window=e.window, stride=e.stride,
                                     batch_size=e.batch_size, progress=lambda k, t=task: bar.advance(t, k))
            results[stream] = aggregate(scores).to_dict()
            bar.update(task, info=f"ppl {results[stream]['ppl']:.2f}")
    return results


def _base_scores(cfg: Config, run_dir: RunDir, texts, device: str) -> dict:
    key = stable_hash({"model": cfg.model.model_dump(mode="json"), "inputs": models.model_inputs(cfg.model),
                       "eval": cfg.eval.model_dump(mode="json", exclude={"compare_base", "batch_size"}),
                       "texts": stable_hash(texts)})
    cache = run_dir.cache_dir("eval-base") / f"{key[:32]}.json"
    if cache.is_file():
        console.print(f"  base model scores reused from cache ({cache.name})")
        return json.loads(cache.read_text(encoding="utf-8"))
    # the base model as published: without any new domain tokens
    model = models.load_model(cfg.model, device=device, extend=False)
    scores = _score_model("base", model, models.load_tokenizer(cfg.model, extend=False), texts, cfg)
    atomic_write_json(cache, scores)
    return scores


def _compare(base: dict | None, tuned: dict) -> dict:
    rows = {}
    for stream, t in tuned.items():
        row = {"tuned": t}
        if base and stream in base:
            row["base"] = base[stream]
            row["ppl_change_pct"] = 100 * (t["ppl"] / base[stream]["ppl"] - 1)
            row["bpb_change"] = t["bpb"] - base[stream]["bpb"]
        rows[stream] = row
    return rows


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    out_dir = run_dir.stage_dir(STAGE)
    device = models.resolve_device(cfg.runtime.device)
    texts = _held_out(cfg, run_dir, models.load_tokenizer(cfg.model))
    base = _base_scores(cfg, run_dir, texts, device) if cfg.eval.compare_base else None
    trained_dir = run_dir.output(cfg.final_model_stage, "model", by=STAGE)
    tuned_model = models.load_trained(cfg.model, trained_dir, device=device)
    tuned = _score_model("tuned", tuned_model, models.load_tokenizer(cfg.model), texts, cfg)
    comparison = _compare(base, tuned)
    atomic_write_json(out_dir / "eval.json", {"split": cfg.eval.split, "streams": comparison})
    plot_perplexity(comparison, out_dir / "perplexity.png", f"{cfg.name}: held-out perplexity")
    print_comparison(comparison, cfg.eval.split)
    metrics = {f"ppl/{s}": round(r["tuned"]["ppl"], 4) for s, r in comparison.items()}
    metrics |= {f"ppl_change_pct/{s}": round(r["ppl_change_pct"], 2)
                for s, r in comparison.items() if "ppl_change_pct" in r}
    changes = ", ".join(f"{s} {r['ppl_change_pct']:+.1f}%" for s, r in comparison.items()
                        if "ppl_change_pct" in r)
    return StageResult(outputs={"results": "eval.json", "plot": "perplexity.png"}, metrics=metrics,
                       summary=f"perplexity vs base: {changes}" if changes else "tuned model scored")


def print_comparison(comparison: dict, split: str) -> None:
    from rich.table import Table

    table = Table(title=f"held-out perplexity ({split} split): base vs tuned", title_justify="left")
    for col in ("stream", "docs", "tokens", "base ppl", "tuned ppl", "change", "base bpb", "tuned bpb"):
        table.add_column(col, justify="left" if col == "stream" else "right")
    for stream, r in comparison.items():
        t, b = r["tuned"], r.get("base")
        change = r.get("ppl_change_pct")
        color = "green" if change is not None and change < 0 else "red"
        table.add_row(stream, str(t["docs"]), f"{t['tokens']:,}", f"{b['ppl']:.2f}" if b else "-",
                      f"{t['ppl']:.2f}", f"[{color}]{change:+.1f}%[/]" if change is not None else "-",
                      f"{b['bpb']:.3f}" if b else "-", f"{t['bpb']:.3f}")
    console.print(table)
