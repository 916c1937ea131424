"""eval_report.html (self-contained: images embedded as base64 PNG) + eval_report.json.

Built from files on disk only (eval/eval.json, and the loss curves every finished training stage
lists in its manifest's `outputs` under `loss_curves` or `loss_curves/<name>`), so
`domaintune report RUN_DIR` regenerates it for any finished run without the config.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from domaintune.artifacts import MANIFEST, atomic_write_json, atomic_write_text
from domaintune.errors import StageError
from domaintune.eval.plots import plot_perplexity, plot_radar, radar_axes

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}"
         "img{max-width:100%;margin:0.5em 0}")


def _img(path: Path | None) -> str:
    if not path or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _stream_rows(streams: dict) -> list[list[str]]:
    return [[html.escape(s), _fmt(r.get("base", {}).get("ppl")), _fmt(r["tuned"]["ppl"]),
             _fmt(r.get("ppl_change_pct"), "+.1f"), _fmt(r.get("base", {}).get("bpb"), ".3f"),
             _fmt(r["tuned"]["bpb"], ".3f")] for s, r in streams.items()]


def _task_rows(tasks: dict) -> list[list[str]]:
    rows = []
    for key, r in tasks.items():
        m = r["metric"]
        base = r.get("base", {}).get("metrics", {}).get(m)
        rows.append([html.escape(key), html.escape(str(r["version"])), r["group"], str(r["tuned"]["n"]),
                     str(r["tuned"]["shots"]), m, _fmt(None if base is None else 100 * base, ".1f"),
                     _fmt(100 * r["tuned"]["metrics"][m], ".1f"), _fmt(r.get("delta_points"), "+.1f")])
    return rows


def _gate_html(gate: dict) -> str:
    status = gate.get("status", "skipped")
    css = {"passed": "pass", "failed": "fail"}.get(status, "")
    verdicts = {True: '<span class="pass">pass</span>', False: '<span class="fail">FAIL</span>'}
    rows = [[html.escape(c["what"]), c["group"], html.escape(c["measure"]), f"{c['value']:+.2f}",
             html.escape(c["rule"]), verdicts[c["passed"]]] for c in gate.get("checks", [])]
    reason = f"<p>{html.escape(gate['reason'])}</p>" if gate.get("reason") else ""
    table = _table(["check", "group", "measure", "value", "rule", "result"], rows) if rows else ""
    return f'<h2>Forgetting gate: <span class="{css}">{status.upper()}</span></h2>{reason}{table}'


def write_report(run_root: Path) -> dict[str, Path]:
    """Write eval/eval_report.html and eval/eval_report.json from the run folder's files."""
    eval_dir = run_root / "eval"
    results_file = eval_dir / "eval.json"
    if not results_file.is_file():
        raise StageError(f"{results_file} not found: run `domaintune eval` for this run first")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    streams, tasks, gate = results.get("streams", {}), results.get("tasks", {}), results.get("gate", {})
    metric = results.get("gate_metric", "acc")
    radar = plot_radar(radar_axes(streams, tasks, metric), eval_dir / "radar.png", f"{run_root.name}: base vs tuned")
    bars = plot_perplexity(streams, eval_dir / "perplexity.png", f"{run_root.name}: held-out perplexity") \
        if streams else None
    losses = loss_plots(run_root)
    parts = [f"<h1>Evaluation report — {html.escape(run_root.name)}</h1>", _gate_html(gate),
             "<h2>Base vs tuned</h2>", _img(radar)]
    if tasks:
        parts.append(_table(["task", "version", "group", "items", "shots", "metric", "base", "tuned", "Δ points"],
                            _task_rows(tasks)))
    if streams:
        parts += [f"<h2>Held-out perplexity ({html.escape(results.get('split', ''))} split)</h2>",
                  _table(["stream", "base ppl", "tuned ppl", "change %", "base bpb", "tuned bpb"],
                         _stream_rows(streams)), _img(bars)]
    parts += _export_html(run_root) + _kb_html(run_root)
    for name, (loss, metrics) in losses.items():
        parts += [f"<h2>Training loss — {html.escape(name)}</h2>", _img(loss), _train_summary(metrics)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run_root.name)} eval</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write_text(eval_dir / "eval_report.html", page)
    named = [("radar", radar), ("perplexity", bars)] + [(f"loss/{name}", p) for name, (p, _) in losses.items()]
    images = {k: str(p.relative_to(run_root)) for k, p in named if p is not None and p.is_file()}
    atomic_write_json(eval_dir / "eval_report.json", {**results, "images": images})
    return {"html": eval_dir / "eval_report.html", "json": eval_dir / "eval_report.json"}


def _export_html(run_root: Path) -> list[str]:
    """The export stage's verification (export/export_report.json), once export has run
    (`domaintune report RUN` after export adds it)."""
    path = run_root / "export" / "export_report.json"
    try:
        formats = json.loads(path.read_text(encoding="utf-8")).get("formats", [])
    except (OSError, ValueError):
        return []
    rows = [[html.escape(r["format"]), f"{r['bytes'] / 2**20:.1f} MiB", f"{r['smaller']:.2f}x",
             f"{r['ppl_rise_pct']:+.3f}", f"{r['kl']:.2g}", f"{r['top1']:.3f}",
             f"{r['greedy_same']}/{r['greedy_prompts']}", f"{r['tokens_per_s']:.1f}",
             html.escape("; ".join(r["violations"])) or "ok"] for r in formats]
    return ["<h2>Export verification (vs the merged fp32 model)</h2>",
            _table(["format", "size", "smaller", "Δppl %", "KL", "top-1", "greedy same", "tok/s", "result"], rows)]


def _kb_html(run_root: Path) -> list[str]:
    """The knowledge base's `domaintune kb eval` results (kb/<name>/eval.json, the file it writes
    next to its index), read from disk: the report never imports the kb stage."""
    parts = []
    for path in sorted(run_root.glob("kb/*/eval.json")):
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
            k = r["k"]
            rows = [[html.escape(m["mode"]), str(m["questions"]), f"{m[f'recall@{k}']:.3f}", f"{m['mrr']:.3f}",
                     html.escape(" ".join(f"{lang} {v:.3f}" for lang, v in m["recall_by_lang"].items())),
                     f"{m['latency_ms_p95']:.1f}"] for m in r["retrieval"]]
            answers = [[html.escape(a["model"]), str(a["questions"]), f"{100 * a['accuracy_no_retrieval']:.1f}",
                        f"{100 * a['accuracy_with_retrieval']:.1f}", f"{100 * a['correct_and_cited']:.1f}"]
                       for a in r.get("answers", [])]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a kb eval result: nothing to show
        parts += [f"<h2>Knowledge base '{html.escape(str(r.get('kb', path.parent.name)))}' (kb eval, embedder "
                  f"{html.escape(str(r.get('embedder') or 'none'))})</h2>",
                  _table(["mode", "questions", f"recall@{k}", "MRR", "recall by language", "p95 ms"], rows)]
        if answers:
            parts.append(_table(["model", "questions", "exact % without retrieval", "exact % with retrieval",
                                 "correct and cited %"], answers))
    return parts


def loss_plots(run_root: Path) -> dict[str, tuple[Path, dict]]:
    """`{"sft/lora": (png, stage metrics), ...}`: the loss curves each finished stage lists in its
    manifest (`loss_curves`, or `loss_curves/<attempt or phase>`), in the order the stages ran."""
    manifests = []
    for stage_dir in sorted(p for p in run_root.iterdir() if p.is_dir()) if run_root.is_dir() else []:
        try:
            manifest = json.loads((stage_dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a finished stage
        if isinstance(manifest, dict):
            manifests.append((str(manifest.get("started_at", "")), stage_dir, manifest))
    plots = {}
    for _, stage_dir, manifest in sorted(manifests, key=lambda m: m[0]):
        for key, rel in (manifest.get("outputs") or {}).items():
            if key == "loss_curves" or key.startswith("loss_curves/"):
                name = stage_dir.name + key.removeprefix("loss_curves")
                if (stage_dir / rel).is_file():
                    plots[name] = (stage_dir / rel, _metrics_of(manifest.get("metrics") or {}, key))
    return plots


def _metrics_of(metrics: dict, key: str) -> dict:
    """An SFT-auto attempt's plot (`loss_curves/<method>`) goes with that attempt's own metrics."""
    attempt = key.partition("/")[2]
    rows = [a for a in metrics.get("attempts") or [] if isinstance(a, dict) and a.get("method") == attempt]
    return rows[0] if attempt and rows else metrics


def _train_summary(metrics: dict) -> str:
    """Why training stopped (auto-eval early stop or the planned end), from the stage's manifest."""
    reason = metrics.get("stop_reason")
    steps = metrics.get("steps")
    if steps is None and reason is None:
        return ""
    return f"<p>{steps} optimizer steps; stop reason: {html.escape(str(reason or 'planned end'))}</p>"
