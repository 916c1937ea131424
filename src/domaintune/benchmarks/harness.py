"""Optional adapter: run our multiple-choice tasks through lm-evaluation-harness (`pip install
domaintune[harness]`), on the same local items and the same prompts, to check our numbers against
the field's reference implementation.

Each task's items are written as a local JSONL with the exact context string we score, the option
strings and the gold index; an lm-eval task YAML points `dataset_path: json` at that file. The
harness then does its own tokenization, batching and log-likelihood scoring with its own HF model
wrapper: only the prompt text is shared, so any difference is a scoring difference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from domaintune.benchmarks.scoring import contexts
from domaintune.benchmarks.tasks import LoadedTask, continuations
from domaintune.errors import ConfigError


def _require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(["the lm-evaluation-harness adapter needs the 'harness' extra: "
                           "pip install 'domaintune[harness]'"]) from None
    return lm_eval


def write_harness_task(task: LoadedTask, out_dir: Path, tokenizer) -> str:
    """Write `<name>.jsonl` + `<name>.yaml` for lm-eval under out_dir; return the lm-eval task name."""
    if task.spec.kind != "multiple_choice":
        raise ConfigError([f"task '{task.name}': the harness adapter compares multiple-choice tasks only"])
    name = f"domaintune_{task.name}"
    delimiter = task.spec.prompt.target_delimiter
    rows = [{"prompt": context, "choices": [c.removeprefix(delimiter) for c in continuations(task.spec, item)],
             "gold": int(item.gold)} for item, context in zip(task.items, contexts(task, tokenizer))]
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
              "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "prompt",
              "doc_to_choice": "choices", "doc_to_target": "gold", "target_delimiter": delimiter,
              "num_fewshot": 0, "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
              "metadata": {"version": task.spec.version}}
    (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                                          encoding="utf-8")
    return name


def run_harness(model_dir: str | Path, tasks: list[LoadedTask], tokenizer, work_dir: Path,
                batch_size: int = 8, device: str = "cpu") -> dict[str, dict]:
    """{task name: {"acc", "acc_norm", "n", "seconds"}} from lm_eval.simple_evaluate on model_dir."""
    lm_eval = _require_lm_eval()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = {write_harness_task(t, work_dir, tokenizer): t for t in tasks}
    manager = TaskManager(include_path=str(work_dir), include_defaults=False)
    # the model loads outside the timed region, as on our side
    lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=batch_size, device=device)
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=list(names), task_manager=manager, log_samples=False)
    seconds = time.perf_counter() - t0
    results = {}
    for name, task in names.items():
        r = out["results"][name]
        results[task.name] = {"acc": r["acc,none"], "acc_norm": r["acc_norm,none"], "n": len(task.items),
                              "seconds": seconds}
    return results
