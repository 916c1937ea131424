"""Benchmark tasks as data (YAML + local JSONL/CSV) and their scoring.

A core-level library: the eval stage scores whole task sets with it, and the train stage's
auto-eval scores a fast subset during training; stages never import each other, both import this.
"""

from domaintune.benchmarks.scoring import TaskResult, score_task
from domaintune.benchmarks.tasks import Item, LoadedTask, TaskSpec, builtin_tasks, load_task

__all__ = ["Item", "LoadedTask", "TaskResult", "TaskSpec", "builtin_tasks", "load_task", "score_task"]
