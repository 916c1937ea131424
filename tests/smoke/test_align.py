"""The DPO example end to end on a tiny random model: pairs -> reward model (two stages) ->
confidence filter -> DPO -> export, then an unchanged re-run that skips, and validation errors."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domaintune.cli import app
from fixtures.cli import invoke as _invoke
from fixtures.cli import stage_statuses

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dpo"
DOMAIN_PAIRS = EXAMPLE / "data" / "domain_pairs.jsonl"
AMBIGUOUS_LINES = {25, 26, 27, 28}  # two equally good answers: the filter's reason to exist
QUARANTINED_LINE = 30  # an empty 'chosen'


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


def _question(row: dict) -> str:
    turns = row["prompt"] if "prompt" in row else row["chosen"][:-1]
    return turns if isinstance(turns, str) else next(t["content"] for t in reversed(turns) if t["role"] == "user")


def _check_filter_report(align: Path, metrics: dict, val_pairs: int) -> None:
    """filter.jsonl has one line per domain training pair, named by its line in the example file
    (the ambiguous pairs included), with the decision its margin interval implies; the manifest
    counts those decisions."""
    example = dict(enumerate((json.loads(line) for line in DOMAIN_PAIRS.read_text().splitlines()), 1))
    rows = [json.loads(line) for line in (align / "filter.jsonl").read_text().splitlines()]
    lines = [r["line"] for r in rows]
    assert len(set(lines)) == len(lines) == len(example) - 1 - val_pairs  # all but quarantined and held out
    assert QUARANTINED_LINE not in lines and AMBIGUOUS_LINES & set(lines)
    for r in rows:
        assert r["source"].endswith("domain_pairs.jsonl") and r["prompt"] == _question(example[r["line"]])[:120]
        low, high = r["interval"]
        assert low <= r["margin"] <= high
        assert r["decision"] == ("keep" if low > 1e-4 else "reversed" if high < -1e-4 else "uncertain"), r
    counts = Counter(r["decision"] for r in rows)
    assert (metrics["filter/kept"], metrics["filter/dropped_uncertain"], metrics["filter/dropped_reversed"]) == (
        counts["keep"], counts["uncertain"], counts["reversed"])


@pytest.fixture(scope="module")
def first_run(workdir, tiny_model_dir) -> Path:
    """align -> eval -> export once; the tests that read its outputs depend on this, not on test order."""
    _invoke("run", str(workdir / "domaintune.yaml"), *_overrides(tiny_model_dir),
            "eval.tasks=[{task: ../quickstart/eval_tasks/harborview.yaml, group: domain, limit: 6}]")
    return workdir / "runs" / "dpo-bank"


def test_align_stage_end_to_end_then_skip(first_run, workdir, tiny_model_dir):
    cfg = str(workdir / "domaintune.yaml")
    align = first_run / "align"
    manifest = json.loads((align / "manifest.json").read_text())
    m = manifest["metrics"]
    assert m["pairs/quarantined"] == 1  # the example's deliberately empty answer
    rejects = [json.loads(line) for line in (align / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [QUARANTINED_LINE] and "'chosen' is empty" in rejects[0]["reason"]
    _check_filter_report(align, m, val_pairs=m["pairs/domain"] - m["filter/pairs"])
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
    assert stage_statuses(out) == {"align": "skipped", "export": "skipped"}


def test_interrupted_stage_reuses_finished_reward_phases(first_run, workdir, tiny_model_dir):
    """Re-running after a crash in DPO must not retrain the finished reward-model phases."""
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
    _check_filter_report(align, m, val_pairs=m["pairs/domain"] - m["filter/pairs"])
    assert "reward_stage2/accuracy_domain" not in m  # one stage: general and domain pairs together
