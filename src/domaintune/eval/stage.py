"""Stage "eval": held-out perplexity and bits-per-byte per stream and benchmark tasks, base model
vs tuned model; then the forgetting gate and the HTML/JSON report.

The base model's scores are cached by fingerprint (model + data + eval settings), so
re-evaluating a new fine-tune never pays for the base model twice. A failed gate raises
GateFailed (exit code 3) after the results and the report are written, so a pipeline stops
before export and the report shows why.
"""

from __future__ import annotations

import json
import random

from domaintune import models
from domaintune.artifacts import RunDir, StageResult, atomic_write_json, stable_hash
from domaintune.config import Config
from domaintune.console import console, progress
from domaintune.errors import GateFailed
from domaintune.eval.gate import evaluate_gate, gate_table
from domaintune.eval.perplexity import aggregate, count_requests, score_documents
from domaintune.eval.plots import plot_perplexity
from domaintune.eval.report import write_report
from domaintune.eval.tasks import compare_tasks, data_inputs, load_entries, score_tasks

STAGE = "eval"


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model) + data_inputs(cfg.eval.tasks)


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
    """Texts per stream from the configured split: a seeded subset within max_docs / max_tokens.
    None without a data stage (an SFT- or alignment-only run is judged on its tasks alone)."""
    if cfg.data is None:
        return {}
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


class _BaseModel:
    """The base model as published (no new domain tokens), loaded only on a cache miss, once."""

    def __init__(self, cfg: Config, device: str):
        self.cfg, self.device, self._loaded = cfg, device, None

    def get(self):
        if self._loaded is None:
            self._loaded = (models.load_model(self.cfg.model, device=self.device, extend=False),
                            models.load_tokenizer(self.cfg.model, extend=False))
        return self._loaded


def _cached(run_dir: RunDir, cfg: Config, what: dict, compute) -> dict:
    key = stable_hash({"model": cfg.model.model_dump(mode="json"), "inputs": models.model_inputs(cfg.model),
                       **what})
    cache = run_dir.cache_dir("eval-base") / f"{key[:32]}.json"
    if cache.is_file():
        console.print(f"  base model scores reused from cache ({cache.name})")
        return json.loads(cache.read_text(encoding="utf-8"))
    scores = compute()
    atomic_write_json(cache, scores)
    return scores


def _base_scores(cfg: Config, run_dir: RunDir, texts, base: _BaseModel) -> dict:
    what = {"eval": cfg.eval.model_dump(mode="json", include={"split", "streams", "max_docs", "max_tokens",
                                                              "window", "stride"}),
            "texts": stable_hash(texts)}
    return _cached(run_dir, cfg, what, lambda: _score_model("base", *base.get(), texts, cfg))


def _base_task_scores(cfg: Config, run_dir: RunDir, tasks, base: _BaseModel) -> dict:
    what = {"tasks": [{"entry": e.model_dump(mode="json"), "spec": t.spec.model_dump(mode="json"),
                       "items": stable_hash([t.context(i) for i in t.items])} for e, t in tasks]}
    return _cached(run_dir, cfg, what, lambda: score_tasks("base", *base.get(), tasks, cfg.eval.task_batch_size))


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
    texts = _held_out(cfg, run_dir, models.load_tokenizer(cfg.model))  # the token budget only
    tasks = load_entries(cfg.eval.tasks)
    for _, t in tasks:
        if t.dropped:
            console.print(f"  [yellow]{t.name}: {len(t.dropped)} row(s) left out[/] (first: {t.dropped[0]})")
    base_model = _BaseModel(cfg, device)
    base = _base_scores(cfg, run_dir, texts, base_model) if cfg.eval.compare_base else None
    base_tasks = _base_task_scores(cfg, run_dir, tasks, base_model) if cfg.eval.compare_base and tasks else None
    del base_model  # free the base weights before loading the tuned model
    # the tuned model is scored with the tokenizer saved with it: its chat template (e.g. sft.template)
    # formats the chat tasks' prompts as training did
    tuned_model = models.load_trained(run_dir.output(cfg.final_model_stage, "model", by=STAGE), base=cfg.model,
                                      device=device)
    console.print(f"  tuned model: {tuned_model.meta.describe()}", markup=False)
    tuned = _score_model("tuned", tuned_model.model, tuned_model.tokenizer, texts, cfg)
    tuned_tasks = (score_tasks("tuned", tuned_model.model, tuned_model.tokenizer, tasks, cfg.eval.task_batch_size)
                   if tasks else {})
    comparison = _compare(base, tuned)
    task_rows = compare_tasks(base_tasks, tuned_tasks, cfg.eval.gate.metric)
    verdict = evaluate_gate(cfg.eval.gate, comparison, task_rows)
    meta = tuned_model.meta
    atomic_write_json(out_dir / "eval.json", {"split": cfg.eval.split, "streams": comparison, "tasks": task_rows,
                                              "gate": verdict, "gate_metric": cfg.eval.gate.metric,
                                              "tuned_model": {"kind": meta.kind, "stage": meta.stage,
                                                              "method": meta.method,
                                                              "tokenizer_from": meta.tokenizer_from,
                                                              "template_from": meta.template_from}})
    plot_perplexity(comparison, out_dir / "perplexity.png", f"{cfg.name}: held-out perplexity")
    outputs = {"results": "eval.json", "plot": "perplexity.png"}
    if cfg.eval.report:
        written = write_report(run_dir.root)
        outputs |= {"report": written["html"].name, "report_json": written["json"].name}
    print_comparison(comparison, cfg.eval.split)
    if task_rows:
        print_tasks(task_rows)
    console.print(gate_table(verdict))
    if verdict["status"] == "failed":
        raise GateFailed(f"forgetting gate failed: {verdict['reason']}. Export will not run. "
                         f"Report: {out_dir / 'eval_report.html'}; thresholds: eval.gate.*")
    return StageResult(outputs=outputs, metrics=_metrics(comparison, task_rows, verdict),
                       summary=_summary(comparison, task_rows, verdict))


def _metrics(comparison: dict, task_rows: dict, verdict: dict) -> dict:
    metrics = {f"ppl/{s}": round(r["tuned"]["ppl"], 4) for s, r in comparison.items()}
    metrics |= {f"ppl_change_pct/{s}": round(r["ppl_change_pct"], 2)
                for s, r in comparison.items() if "ppl_change_pct" in r}
    for key, r in task_rows.items():
        metrics[f"task/{key}/{r['metric']}"] = round(r["tuned"]["metrics"][r["metric"]], 4)
        if "delta_points" in r:
            metrics[f"task_delta_points/{key}"] = round(r["delta_points"], 2)
    metrics["gate"] = verdict["status"]
    return metrics


def _summary(comparison: dict, task_rows: dict, verdict: dict) -> str:
    parts = [f"{s} ppl {r['ppl_change_pct']:+.1f}%" for s, r in comparison.items() if "ppl_change_pct" in r]
    parts += [f"{k} {r['delta_points']:+.1f} pts" for k, r in task_rows.items() if "delta_points" in r]
    return (", ".join(parts) or "tuned model scored") + f"; gate {verdict['status']}"


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


def print_tasks(task_rows: dict) -> None:
    from rich.table import Table

    table = Table(title="benchmark tasks: base vs tuned", title_justify="left")
    for col in ("task", "version", "group", "items", "metric", "base", "tuned", "change"):
        table.add_column(col, justify="left" if col in ("task", "group", "metric") else "right")
    for key, r in task_rows.items():
        m = r["metric"]
        base = r.get("base", {}).get("metrics", {}).get(m)
        delta = r.get("delta_points")
        color = "green" if delta is not None and delta >= 0 else "red"
        table.add_row(key, str(r["version"]), r["group"], str(r["tuned"]["n"]), m,
                      f"{100 * base:.1f}" if base is not None else "-", f"{100 * r['tuned']['metrics'][m]:.1f}",
                      f"[{color}]{delta:+.1f}[/]" if delta is not None else "-")
    console.print(table)
