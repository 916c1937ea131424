"""The distillation example end to end on a tiny model: data -> mix -> train -> distill (a pruned
student with logit KD from the cached teacher) -> eval (of the student) -> export (GGUF q8_0 of the
student), then the student answers through `domaintune chat`; sequence-level KD runs too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.cli import invoke
from fixtures.quickstart import make_quickstart_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_quickstart_workdir(tmp_path_factory.mktemp("distill"))


def _overrides(tiny_model_dir: Path, method: str) -> list[str]:
    return [f"model.base={tiny_model_dir}", "mix.tokens=6k", "mix.buckets=[64,128]", "train.max_steps=2",
            "train.logging.log_every=1", "train.logging.eval_every=null", "eval.tasks=[]", "eval.max_docs=4",
            "eval.max_tokens=512", "eval.gate.enabled=false", "export.sample_prompts=[]",
            f"distill.method={method}", "distill.steps=4", "distill.batch_rows=2", "distill.seq_new_tokens=8",
            "export.gguf=[q8_0]", "export.verify_tokens=256", "export.verify_new_tokens=2"]


def test_distill_stage_end_to_end_with_logit_kd(workdir, tiny_model_dir):
    cfg = str(workdir / "domaintune.yaml")
    invoke("run", cfg, *_overrides(tiny_model_dir, "logit_kd"))
    run = workdir / "runs" / "quickstart"
    info = json.loads((run / "distill" / "distill.json").read_text())
    assert info["teacher_stage"] == "train" and info["student"] == {"init": "prune_layers", "layers": [0],
                                                                      "prune": "deep_block"}
    assert info["student_params"] < info["teacher_params"]
    records = json.loads((run / "distill" / "metrics.json").read_text())
    assert len(records) == 4 and all(r["kl"] is not None and r["kl"] >= 0 for r in records)
    assert any((run / "cache" / "distill-teacher").glob("*.safetensors"))  # the teacher pass, cached
    student_cfg = json.loads((run / "export" / "model" / "config.json").read_text())
    assert student_cfg["num_hidden_layers"] == 1  # eval and export use the student
    eval_manifest = json.loads((run / "eval" / "manifest.json").read_text())
    assert "distill" in eval_manifest["upstream"]
    report = json.loads((run / "export" / "export_report.json").read_text())
    assert report["formats"][0]["format"] == "q8_0" and not report["formats"][0]["violations"]
    out = invoke("chat", str(run / "export" / "model"), "--prompt", "fee?", "--max-new-tokens", "3")
    assert out.exit_code == 0


def test_sequence_level_kd(workdir, tiny_model_dir, tmp_path):
    cfg = str(workdir / "domaintune.yaml")
    invoke("run", cfg, *_overrides(tiny_model_dir, "seq_kd"), f"runs_dir={tmp_path}", "--stages",
           "data,mix,train,distill")
    info = json.loads((tmp_path / "quickstart" / "distill" / "distill.json").read_text())
    assert info["method"] == "seq_kd" and info["steps"] == 4
    records = json.loads((tmp_path / "quickstart" / "distill" / "metrics.json").read_text())
    assert all(r["kl"] is None for r in records)
