"""The forgetting gate: the tuned model must not get worse at general skills and must get better
at the domain, by thresholds in `eval.gate`. A failed gate stops the pipeline before export."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from domaintune.config import GateConfig
from domaintune.eval.tasks import task_score


@dataclass
class Check:
    what: str  # "stream english" / "task mmlu"
    group: str  # general | domain
    measure: str
    value: float
    rule: str
    passed: bool


def _stream_checks(gate: GateConfig, streams: dict) -> list[Check]:
    checks = []
    for name, row in streams.items():
        change = row.get("ppl_change_pct")
        if change is None:
            continue
        if name in gate.domain_streams and gate.min_domain_ppl_drop_pct is not None:
            limit = -gate.min_domain_ppl_drop_pct
            checks.append(Check(f"stream {name}", "domain", "ppl change %", change,
                                f"<= {limit:+.1f}%", change <= limit))
        elif name not in gate.domain_streams and gate.max_general_ppl_rise_pct is not None:
            limit = gate.max_general_ppl_rise_pct
            checks.append(Check(f"stream {name}", "general", "ppl change %", change,
                                f"<= {limit:+.1f}%", change <= limit))
    return checks


def _task_checks(gate: GateConfig, tasks: dict) -> list[Check]:
    checks = []
    for key, row in tasks.items():
        if "base" not in row:
            continue
        delta = 100 * (task_score(row["tuned"], gate.metric) - task_score(row["base"], gate.metric))
        measure = f"{row['metric']} change (points)"
        if row["group"] == "domain" and gate.min_domain_task_gain is not None:
            checks.append(Check(f"task {key}", "domain", measure, delta, f">= {gate.min_domain_task_gain:+.1f}",
                                delta >= gate.min_domain_task_gain))
        elif row["group"] == "general" and gate.max_general_task_drop is not None:
            checks.append(Check(f"task {key}", "general", measure, delta, f">= {-gate.max_general_task_drop:+.1f}",
                                delta >= -gate.max_general_task_drop))
    return checks


def evaluate_gate(gate: GateConfig, streams: dict, tasks: dict) -> dict:
    """{'status': passed|failed|skipped|disabled, 'checks': [...], 'reason': ...}."""
    if not gate.enabled:
        return {"status": "disabled", "checks": [], "reason": "eval.gate.enabled is false"}
    checks = _stream_checks(gate, streams) + _task_checks(gate, tasks)
    if not checks:
        return {"status": "skipped", "checks": [],
                "reason": "no base-model scores to compare against (eval.compare_base is false) or no thresholds set"}
    failed = [c for c in checks if not c.passed]
    return {"status": "failed" if failed else "passed", "checks": [asdict(c) for c in checks],
            "reason": "; ".join(f"{c.what}: {c.measure} {c.value:+.2f}, needs {c.rule}" for c in failed)}


def gate_table(verdict: dict):
    from rich.table import Table

    color = {"passed": "green", "failed": "red"}.get(verdict["status"], "yellow")
    table = Table(title=f"forgetting gate: [{color}]{verdict['status'].upper()}[/]", title_justify="left")
    for col in ("check", "group", "measure", "value", "rule", "result"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for c in verdict["checks"]:
        table.add_row(c["what"], c["group"], c["measure"], f"{c['value']:+.2f}", c["rule"],
                      "[green]pass[/]" if c["passed"] else "[bold red]FAIL[/]")
    return table
