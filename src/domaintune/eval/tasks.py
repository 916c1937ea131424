"""Benchmark tasks in the eval stage: load the configured tasks, score a model on them, compare."""

from __future__ import annotations

from domaintune.benchmarks import LoadedTask, load_task, score_task
from domaintune.benchmarks.scoring import request_count
from domaintune.benchmarks.spec import read_spec
from domaintune.benchmarks.tasks import resolve_data_path, spec_path
from domaintune.config import EvalTaskConfig
from domaintune.console import progress

GEN_METRIC = "exact_match"


def load_entries(entries: list[EvalTaskConfig]) -> list[tuple[EvalTaskConfig, LoadedTask]]:
    return [(e, load_task(e.task, data=e.data, fewshot_data=e.fewshot_data, subjects=e.subjects,
                          limit=e.limit, shots=e.shots)) for e in entries]


def task_key(entry: EvalTaskConfig, task: LoadedTask, taken: dict) -> str:
    """Results are keyed by task name; a task listed twice (e.g. other subjects) gets '@<n>'."""
    key, n = task.name, 1
    while key in taken:
        n += 1
        key = f"{task.name}@{n}"
    return key


def data_inputs(entries: list[EvalTaskConfig]) -> list[str]:
    """Files a task set reads (they join the stage fingerprint: edited data re-runs eval)."""
    paths = []
    for e in entries:
        spec_file = spec_path(e.task)
        spec = read_spec(spec_file)
        for p in (e.data or spec.data.path, e.fewshot_data or spec.fewshot.path):
            if p:
                paths.append(str(resolve_data_path(p, spec_file.parent)))
        paths.append(str(spec_file))
    return paths


def score_tasks(label: str, model, tokenizer, tasks, batch_size: int) -> dict[str, dict]:
    """Score every task with one progress bar each (count, ETA); results keyed by task_key."""
    results = {}
    with progress() as bar:
        for entry, task in tasks:
            handle = bar.add_task(f"{label}: {task.name}", total=request_count(task), info="")
            result = score_task(model, tokenizer, task, batch_size, progress=lambda k, h=handle: bar.advance(h, k))
            main = result.metrics.get("acc", result.metrics.get(GEN_METRIC))
            bar.update(handle, info=f"{100 * main:.1f}")
            results[task_key(entry, task, results)] = {**result.to_dict(), "group": entry.group}
    return results


def task_score(result: dict, metric: str) -> float:
    """The one number a task is judged by: `metric` for multiple choice, exact match for generation."""
    m = result["metrics"]
    return m[metric] if metric in m else m[GEN_METRIC]


def compare_tasks(base: dict | None, tuned: dict, metric: str) -> dict:
    rows = {}
    for key, t in tuned.items():
        row = {"tuned": t, "group": t["group"], "version": t["version"], "metric": metric
               if metric in t["metrics"] else GEN_METRIC}
        if base and key in base:
            row["base"] = base[key]
            row["delta_points"] = 100 * (task_score(t, metric) - task_score(base[key], metric))
        rows[key] = row
    return rows
