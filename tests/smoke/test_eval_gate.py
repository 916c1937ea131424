"""Eval with benchmark tasks on the tiny model: auto-eval stops training early (reason recorded), a
failing forgetting gate stops `domaintune run` before export (exit code 3), and a passing gate lets
export run and leaves the report with its radar chart."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domaintune.cli import app
from fixtures.quickstart import make_quickstart_workdir  # noqa: E402

TASKS = "[{task: eval_tasks/harborview.yaml, group: domain, limit: 8}, {task: mmlu, limit: 8}]"
AUTO_EVAL = ("{every: 1, tasks: [{task: eval_tasks/harborview.yaml, group: domain}], limit: 4, patience: 2, "
             "min_gain_per_mtokens: 1.0e9}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_quickstart_workdir(tmp_path_factory.mktemp("quickstart-gate"))


def _overrides(tiny_model_dir: Path, *extra: str) -> list[str]:
    return [f"model.base={tiny_model_dir}", "mix.tokens=4k", "mix.buckets=[64,128]", "train.max_steps=3",
            "train.batch_tokens=256", "mix.heldout_tokens=1k", "eval.max_docs=3", "eval.window=64",
            "eval.stride=64", "export.max_new_tokens=4", "runtime.threads=1", f"eval.tasks={TASKS}",
            "eval.task_batch_size=16", f"train.auto_eval={AUTO_EVAL}", *extra]


def test_failing_gate_stops_the_pipeline_before_export(workdir, tiny_model_dir):
    cfg = str(workdir / "domaintune.yaml")
    result = CliRunner().invoke(app, ["run", cfg, *_overrides(tiny_model_dir, "eval.gate.min_domain_task_gain=100")])
    assert result.exit_code == 3, result.output
    out = " ".join(result.output.split())
    assert "forgetting gate: FAILED" in out and "task harborview" in out and "Export will not run" in out
    run = workdir / "runs" / "quickstart"
    assert not (run / "export" / "manifest.json").exists() and not (run / "eval" / "manifest.json").exists()
    results = json.loads((run / "eval" / "eval.json").read_text())
    assert results["gate"]["status"] == "failed"
    assert {k: r["version"] for k, r in results["tasks"].items()} == {"harborview": "1", "mmlu": "1"}
    assert (run / "eval" / "eval_report.html").is_file()

    train = json.loads((run / "train" / "manifest.json").read_text())["metrics"]
    assert train["steps"] == 2 and train["stop_reason"].startswith("auto-eval plateau")  # of 3 planned
    records = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "autoeval/harborview/acc" in r] == [1, 2]
    assert records[-1]["stop_reason"] == train["stop_reason"]


def test_passing_gate_runs_export_and_writes_the_report(workdir, tiny_model_dir):
    cfg = str(workdir / "domaintune.yaml")
    lenient = ["eval.gate.max_general_ppl_rise_pct=1e6", "eval.gate.max_general_task_drop=100",
               "eval.gate.min_domain_ppl_drop_pct=null", "eval.gate.min_domain_task_gain=null"]
    result = CliRunner().invoke(app, ["run", cfg, *_overrides(tiny_model_dir, *lenient)])
    assert result.exit_code == 0, result.output
    run = workdir / "runs" / "quickstart"
    assert (run / "export" / "manifest.json").is_file()
    assert "benchmark tasks: base vs tuned" in result.output and "PASSED" in result.output
    page = (run / "eval" / "eval_report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "radar" in page
    report = json.loads((run / "eval" / "eval_report.json").read_text())
    assert report["gate"]["status"] == "passed" and "radar" in report["images"]
    assert set(report["tasks"]["mmlu"]["tuned"]["metrics"]) == {"acc", "acc_norm"}
    (run / "eval" / "eval_report.html").unlink()
    regenerated = CliRunner().invoke(app, ["report", str(run)])
    assert regenerated.exit_code == 0 and (run / "eval" / "eval_report.html").is_file()
