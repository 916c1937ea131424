"""Read what a run folder holds, for the dashboard: manifests through `domaintune.artifacts.RunDir`,
and the report files the stages write (data_report.json, eval/eval.json, loss-curve PNGs).

Read-only, and never by importing a stage (layering): the file names below are the stages'
documented outputs, found through each manifest's `outputs` where the manifest lists them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from domaintune.artifacts import MANIFEST, RunDir, read_heartbeat

RUN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # config.schema's run-name pattern
HEARTBEAT_FRESH_S = 300  # a heartbeat younger than this means "running"
DATA_REPORT, EVAL_RESULTS, RADAR = "data_report.json", "eval.json", "radar.png"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run folder (one holding a stage folder with a manifest or a heartbeat), newest first."""
    if not runs_dir.is_dir():
        return []
    runs = []
    for root in runs_dir.iterdir():
        if not root.is_dir() or not RUN_NAME.match(root.name):
            continue
        stages = stages_of(root)
        if stages:
            latest = max((s["started_at"] or "" for s in stages), default="")
            runs.append({"name": root.name, "stages": stages, "latest": latest,
                         "done": sum(s["status"] == "done" for s in stages)})
    return sorted(runs, key=lambda r: r["latest"], reverse=True)


def stages_of(root: Path) -> list[dict[str, Any]]:
    """Each stage folder's status (done / running / incomplete), time and summary, in the order they ran."""
    run = RunDir(root)
    stages = []
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "cache"):
        manifest = run.manifest(stage_dir.name)
        beat = read_heartbeat(stage_dir / "heartbeat.json")
        if manifest is None and beat is None and not (stage_dir / MANIFEST).exists():
            continue
        status = "done" if manifest else ("running" if beat and time.time() - float(beat["time"]) < HEARTBEAT_FRESH_S
                                          else "incomplete")
        manifest = manifest or {}
        stages.append({"name": stage_dir.name, "status": status, "started_at": manifest.get("started_at"),
                       "wall_time_s": manifest.get("wall_time_s"), "summary": manifest.get("summary", ""),
                       "metrics": _scalars(manifest.get("metrics") or {}), "outputs": manifest.get("outputs") or {},
                       "step": (beat or {}).get("step")})
    return sorted(stages, key=lambda s: (s["started_at"] is None, s["started_at"] or "", s["name"]))


def _scalars(metrics: dict) -> dict[str, Any]:
    """The manifest metrics a table can show (numbers, strings, booleans)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def images(root: Path, stages: list[dict[str, Any]]) -> dict[str, str]:
    """{label: path relative to the run}: every loss curve a manifest lists, and the eval plots."""
    found = {}
    for stage in stages:
        for key, rel in stage["outputs"].items():
            if (key == "loss_curves" or key.startswith("loss_curves/")) and isinstance(rel, str):
                found[stage["name"] + key.removeprefix("loss_curves")] = f"{stage['name']}/{rel}"
    for name in (RADAR, "perplexity.png"):
        found[f"eval/{name.removesuffix('.png')}"] = f"eval/{name}"
    return {label: rel for label, rel in found.items() if _inside(root, rel) and (root / rel).is_file()}


def _inside(root: Path, rel: str) -> bool:
    try:
        return (root / rel).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return False


def data_report(root: Path, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Counts, rejects by reason, PII per type and the largest duplicate clusters of the data stage."""
    data = next((s for s in stages if s["name"] == "data"), None)
    if data is None:
        return None
    report = _read_json(root / "data" / DATA_REPORT)
    if not isinstance(report, dict) or not isinstance(report.get("total"), dict):
        return None
    pii = []
    for step, counts in (report.get("pii") or {}).items():
        pairs = counts.items() if isinstance(counts, dict) else [("all", counts)]
        pii += [{"step": step, "type": t, "count": n} for t, n in pairs]
    return {"total": report["total"], "rejects": report["total"].get("rejected_by_reason") or {},
            "pii": pii, "clusters": (report.get("near_duplicate_clusters") or [])[:10],
            "streams": report.get("streams") or {}}


def eval_results(root: Path) -> dict[str, Any] | None:
    """Base vs tuned perplexity per stream, task scores and the gate verdict (eval/eval.json)."""
    results = _read_json(root / "eval" / EVAL_RESULTS)
    if not isinstance(results, dict):
        return None
    streams = [{"stream": name, "base": (r.get("base") or {}).get("ppl"), "tuned": (r.get("tuned") or {}).get("ppl"),
                "change": r.get("ppl_change_pct")} for name, r in (results.get("streams") or {}).items()]
    tasks = []
    for key, r in (results.get("tasks") or {}).items():
        metric = r.get("metric", "acc")
        tuned = ((r.get("tuned") or {}).get("metrics") or {}).get(metric)
        base = ((r.get("base") or {}).get("metrics") or {}).get(metric)
        tasks.append({"task": key, "metric": metric, "n": (r.get("tuned") or {}).get("n"),
                      "base": None if base is None else 100 * base, "tuned": None if tuned is None else 100 * tuned,
                      "delta": r.get("delta_points")})
    gate = results.get("gate") or {"status": "skipped", "checks": []}
    return {"streams": streams, "tasks": tasks, "gate": gate, "split": results.get("split", "")}


def export_report(root: Path, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The export stage's metrics and every JSON report it lists (samples, verification)."""
    export = next((s for s in stages if s["name"] == "export"), None)
    if export is None:
        return None
    reports = {}
    for key, rel in export["outputs"].items():
        if isinstance(rel, str) and rel.endswith(".json") and _inside(root, f"export/{rel}"):
            reports[key] = _read_json(root / "export" / rel)
    return {"metrics": export["metrics"], "summary": export["summary"], "reports": reports}


def run_view(runs_dir: Path, name: str) -> dict[str, Any] | None:
    """Everything the run page shows, or None if there is no such run."""
    if not RUN_NAME.match(name) or not (runs_dir / name).is_dir():
        return None
    root = runs_dir / name
    stages = stages_of(root)
    return {"name": name, "stages": stages, "images": images(root, stages), "data": data_report(root, stages),
            "eval": eval_results(root), "export": export_report(root, stages)}


def image_path(runs_dir: Path, name: str, rel: str) -> Path | None:
    """The file behind an image link, only if the run page would show it (no other file is ever served)."""
    view = run_view(runs_dir, name)
    if view is None or rel not in view["images"].values():
        return None
    return runs_dir / name / rel
