"""The DPO example end to end on a tiny random model: pairs -> reward model (two stages) ->
confidence filter -> DPO -> export, then an unchanged re-run that skips, and validation errors."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domaintune.cli import app
from fixtures.cli import invoke as _invoke

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dpo"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("dpo")
    shutil.copytree(EXAMPLE, work / "dpo")
    shutil.copytree(EXAMPLE.parent / "quickstart" / "eval_tasks", work / "quickstart" / "eval_tasks")
    return work / "dpo"


def _overrides(tiny_model_dir: Path) -> list[str]:
    return [f"model.base={tiny_model_dir}", "align.reward.max_steps=3", "align.dpo.max_steps=4",
            "align.dpo.eval_every=2", "align.dpo.max_len=128", "align.filter.samples=4", "train.save_every=2",
            "export.max_new_tokens=4", "runtime.threads=1"]



def test_validate_dpo_example(workdir, tiny_model_dir):
    out = _invoke("validate", str(workdir / "domaintune.yaml"), *_overrides(tiny_model_dir)).output
    assert "align" in out and "train" not in out.split("stages")[-1]


def test_align_stage_end_to_end_then_skip(workdir, tiny_model_dir):
    cfg = str(workdir / "domaintune.yaml")
    _invoke("run", cfg, *_overrides(tiny_model_dir),
            "eval.tasks=[{task: ../quickstart/eval_tasks/harborview.yaml, group: domain, limit: 6}]")
    align = workdir / "runs" / "dpo-bank" / "align"
    manifest = json.loads((align / "manifest.json").read_text())
    m = manifest["metrics"]
    assert m["pairs/quarantined"] == 1  # the example's deliberately empty answer
    assert "'chosen' is empty" in (align / "rejects.jsonl").read_text()
    assert m["filter/pairs"] == m["filter/kept"] + m["filter/dropped_uncertain"] + m["filter/dropped_reversed"]
    decisions = [json.loads(line) for line in (align / "filter.jsonl").read_text().splitlines()]
    assert len(decisions) == m["filter/pairs"]
    assert {"reward_stage1/accuracy_domain", "reward_stage2/accuracy_domain", "dpo_before/rewards/margins",
            "dpo_after/rewards/margins", "filter/rm_agreement_before", "filter/rm_agreement_after"} <= set(m)
    assert (align / "model" / "adapter_config.json").is_file()  # started from the base: adapter only
    assert (align / "reward_model" / "adapter_config.json").is_file()
    assert (align / "reward_margin.png").is_file() and (align / "heartbeat.json").is_file()  # one per stage
    assert (align / manifest["outputs"]["loss_curves"]).is_file()  # reward-model and DPO losses, for the report
    assert list((align / "dpo" / "checkpoints").glob("checkpoint-*"))
    assert (workdir / "runs" / "dpo-bank" / "export" / "model" / "model.safetensors").is_file()
    results = json.loads((workdir / "runs" / "dpo-bank" / "eval" / "eval.json").read_text())
    assert results["streams"] == {} and set(results["tasks"]) == {"harborview"}  # no data stage: tasks only
    assert (workdir / "runs" / "dpo-bank" / "eval" / "eval_report.html").is_file()

    out = _invoke("run", cfg, "--stages", "align,export", *_overrides(tiny_model_dir)).output
    assert out.count("skipped") >= 2


def test_interrupted_stage_reuses_finished_reward_phases(workdir, tiny_model_dir):
    """Re-running after a crash in DPO must not retrain the finished reward-model phases."""
    align = workdir / "runs" / "dpo-bank" / "align"
    if not (align / "manifest.json").is_file():
        pytest.skip("pipeline test did not run")
    out = _invoke("run", str(workdir / "domaintune.yaml"), "--stages", "align", "--force",
                  *_overrides(tiny_model_dir), "align.dpo.beta=0.2").output
    assert out.count("finished in an earlier attempt") == 2  # reward-stage1 and reward-stage2


def test_validate_reports_missing_pairs_file_and_qlora_on_cpu(workdir, tiny_model_dir):
    result = CliRunner().invoke(app, ["validate", str(workdir / "domaintune.yaml"), *_overrides(tiny_model_dir),
                                      "align.data.domain=[nope.jsonl]", "align.method=qlora"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "align.data.domain[0]: file not found" in text and "align.method: 'qlora'" in text


def test_full_fine_tuning_with_an_ensemble_filter(workdir, tiny_model_dir, tmp_path):
    """method=full (frozen reference copy) and filter.method=ensemble (K reward models)."""
    _invoke("run", str(workdir / "domaintune.yaml"), "--stages", "align", *_overrides(tiny_model_dir),
            f"runs_dir={tmp_path}", "align.method=full", "align.filter.method=ensemble", "align.filter.samples=2",
            "align.dpo.max_steps=2", "align.dpo.eval_every=null", "align.reward.two_stage=false")
    align = tmp_path / "dpo-bank" / "align"
    assert (align / "reward-stage1-m0" / "done").is_dir() and (align / "reward-stage1-m1" / "done").is_dir()
    assert (align / "model" / "model.safetensors").is_file()
    m = json.loads((align / "manifest.json").read_text())["metrics"]
    assert m["filter/pairs"] == m["filter/kept"] + m["filter/dropped_uncertain"] + m["filter/dropped_reversed"]
    assert "reward_stage2/accuracy_domain" not in m  # one stage: general and domain pairs together
