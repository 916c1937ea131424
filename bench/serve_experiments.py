"""What the templates + A/B layer adds per request, in-process, against the bare request path's hooks.

    python bench/serve_experiments.py [--requests 3000] [--repeats 5] [--json out.json]

Per request, both variants run what the request path calls around the engine (no model, no HTTP):
  baseline     the open defaults: ModelTemplate.apply + the audit record through LogAuditor (logger off)
  experiments  Experiments.assign (SHA-256 split by user) + TemplateRegistry.apply (sandboxed Jinja,
               the shipped `bank-customer-service` template with its example turn) + the audit record
               through AuditTee (one SQLite WAL insert into the experiment store) + LogAuditor
Prints the median and p95 per-request time in microseconds (medians over repeats, variants
interleaved) and the difference; the load average at start says how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from domaintune.config.serve_experiments import ExperimentsConfig
from domaintune.serve.experiment_store import ExperimentStore
from domaintune.serve.experiments import AuditTee, Experiments
from domaintune.serve.hooks import AuditRecord, LogAuditor, ModelTemplate, Principal, Prompt
from domaintune.serve.templates import TemplateRegistry

MESSAGES = [{"role": "user", "content": "I lost my card abroad, can you block it and send a new one?"}]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def baseline(n: int, offset: int) -> list[float]:
    templates, audit, out = ModelTemplate(), LogAuditor(), []
    for i in range(n):
        t0 = time.perf_counter()
        principal = Principal(id="local")
        templates.apply(principal, Prompt(messages=list(MESSAGES)))
        audit.record(AuditRecord(request_id=f"b{offset}-{i}", route="/v1/chat/completions", principal="local",
                                 tenant="default", status=200))
        out.append(time.perf_counter() - t0)
    return out


def experiments_layer(n: int, offset: int, exps: Experiments, templates: TemplateRegistry) -> list[float]:
    audit, out = AuditTee(LogAuditor(), exps), []
    for i in range(n):
        t0 = time.perf_counter()
        principal = Principal(id="local")
        prompt = Prompt(messages=list(MESSAGES), route="/v1/chat/completions")
        _, variant = exps.assign(principal, prompt, "bank", f"user-{i}")
        prompt = templates.apply(principal, prompt)
        audit.record(AuditRecord(request_id=f"e{offset}-{i}", route="/v1/chat/completions", principal="local",
                                 tenant="default", status=200, variant=variant, template_id=prompt.template_id))
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.getLogger("domaintune.serve.audit").setLevel(logging.WARNING)  # measure the layer, not log I/O
    print(f"load average at start: {os.getloadavg()}")
    templates = TemplateRegistry()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentsConfig(store=str(Path(tmp) / "ab.db"), active=[{"name": "tone", "variants": [
            {"name": "A", "weight": 1, "template": "bank-customer-service"},
            {"name": "B", "weight": 1, "template": "qa-grounded"}]}])
        exps = Experiments(cfg, ExperimentStore(cfg.store), "bank", templates)
        rows = {"baseline": [], "experiments": []}
        for r in range(args.repeats):
            base = baseline(args.requests, r)
            ours = experiments_layer(args.requests, r, exps, templates)
            rows["baseline"].append((_pct(base, 50), _pct(base, 95)))
            rows["experiments"].append((_pct(ours, 50), _pct(ours, 95)))
    result = {name: {"p50_us": statistics.median(p for p, _ in v) * 1e6,
                     "p95_us": statistics.median(q for _, q in v) * 1e6} for name, v in rows.items()}
    for name, v in result.items():
        print(f"{name:12s} p50 {v['p50_us']:8.1f} us   p95 {v['p95_us']:8.1f} us")
    ours, base = result["experiments"], result["baseline"]
    print(f"added per request: p50 +{ours['p50_us'] - base['p50_us']:.1f} us, "
          f"p95 +{ours['p95_us'] - base['p95_us']:.1f} us")
    if args.json:
        args.json.write_text(json.dumps({**result, "load_average": os.getloadavg()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
