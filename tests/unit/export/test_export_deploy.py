"""The export stage's deployment formats end to end on a tiny model: GGUF + Modelfile + INT8 written,
verified, reported in export_report.json; INT8 served through serve's loader; a format outside its
tolerance fails the stage with exit code 3 after the report is written; the config's refusals."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from domaintune import models
from domaintune.artifacts import RunDir
from domaintune.config import Config, ModelConfig
from domaintune.config.export import ExportConfig
from domaintune.export import stage as export_stage
from domaintune.export.verify import ExportOutOfTolerance


def _run(tmp_path, tiny_model_dir, export: dict) -> tuple[Config, RunDir]:
    from transformers import AutoTokenizer

    cfg = Config.model_validate({
        "name": "t", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tiny_model_dir)},
        "sft": {"data": [{"path": str(tmp_path / "c.jsonl")}], "method": "full"}, "runtime": {"device": "cpu"},
        "export": {"verify_tokens": 256, "verify_new_tokens": 4, **export}})
    run_dir = RunDir(cfg.run_path)
    models.save_trained(models.load_model(ModelConfig(base=str(tiny_model_dir))),
                        AutoTokenizer.from_pretrained(tiny_model_dir), run_dir.stage_dir("sft") / "model")
    run_dir.write_manifest("sft", {"stage": "sft", "fingerprint": "fp", "outputs": {"model": "model"},
                                   "config": {"model": cfg.section("model")}})
    return cfg, run_dir


def test_gguf_modelfile_and_int8_are_written_verified_and_reported(tmp_path, tiny_model_dir):
    cfg, run_dir = _run(tmp_path, tiny_model_dir, {"gguf": ["q8_0", "f16"], "modelfile": True, "quantize": "int8"})
    result = export_stage.run(cfg, run_dir)
    out = run_dir.root / "export"
    report = json.loads((out / "export_report.json").read_text())
    rows = {r["format"]: r for r in report["formats"]}
    assert set(rows) == {"q8_0", "f16", "int8"} and all(not r["violations"] for r in rows.values())
    assert rows["f16"]["max_abs_logit_diff"] < 1e-2 and rows["q8_0"]["kl"] < 5e-3
    assert all(r["same_token_ids"] and r["tokens"] >= 64 for r in rows.values())
    assert rows["int8"]["quantized_modules"] == 14 and rows["int8"]["bytes"] < rows["int8"]["bytes_fp32"]
    assert (out / "gguf" / "t-q8_0.gguf").is_file() and (out / "gguf" / "t-f16.gguf").is_file()
    mf = (out / "gguf" / "Modelfile").read_text()
    assert mf.startswith("FROM ./t-q8_0.gguf\n") and report["modelfile"]["render_equal"]  # the first GGUF
    assert result.outputs["report"] == "export_report.json" and "q8_0" in result.summary
    assert result.metrics["q8_0_smaller"] > 3
    from domaintune.eval.report import _export_html

    assert "q8_0" in "".join(_export_html(run_dir.root))  # `domaintune report RUN` shows the verification

    from domaintune.chat import load_chat_model
    from domaintune.generation import generate_reply
    from domaintune.serve.loading import load_for_serving

    model, tok = load_for_serving(out / "int8")  # what `domaintune serve --model runs/t/export/int8` loads
    assert type(model.model.layers[0].mlp.down_proj.weight).__name__ == "Int8Tensor"
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied head kept in fp32
    assert isinstance(generate_reply(model, tok, [{"role": "user", "content": "fee?"}], max_new_tokens=3), str)
    chat_model, _, _ = load_chat_model(out / "int8", "cpu")  # `domaintune chat runs/t/export/int8`
    ids = tok("The bank", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(chat_model(ids).logits, model(ids).logits)


def test_a_format_outside_its_tolerance_fails_the_stage_after_the_report(tmp_path, tiny_model_dir):
    cfg, run_dir = _run(tmp_path, tiny_model_dir, {"gguf": ["q4_0"], "tolerance": {"q4_0": {"min_top1": 1.0,
                                                                                           "max_kl": 0.0}}})
    with pytest.raises(ExportOutOfTolerance, match="q4_0.*KL") as err:
        export_stage.run(cfg, run_dir)
    assert err.value.exit_code == 3  # like the forgetting gate
    report = json.loads((run_dir.root / "export" / "export_report.json").read_text())
    assert report["formats"][0]["violations"] and report["formats"][0]["tolerance"]["max_ppl_rise_pct"] == 50.0


def test_export_config_refusals_and_partial_tolerances():
    with pytest.raises(ValidationError, match=r"gguf: \[q4_0\]"):
        ExportConfig(quantize="int4")
    with pytest.raises(ValidationError, match="needs a GGUF"):
        ExportConfig(modelfile=True)
    with pytest.raises(ValidationError, match="merged model"):
        ExportConfig(gguf=["q8_0"], merge=False)
    with pytest.raises(ValidationError, match="unknown format"):
        ExportConfig(tolerance={"q9": {"max_kl": 1}})
    cfg = ExportConfig(gguf=["q8_0", "q4_k_m"], tolerance={"q8_0": {"max_ppl_rise_pct": 0.2}})
    assert cfg.tolerance_for("q8_0").max_ppl_rise_pct == 0.2 and cfg.tolerance_for("q8_0").min_top1 == 0.95
    assert cfg.tolerance_for("q4_k_m").max_kl == 0.4


def test_validate_reports_k_quants_without_llama_cpp(tmp_path, monkeypatch):
    from domaintune import checks

    real = checks._has
    monkeypatch.setattr(checks, "_has", lambda module: module != "llama_cpp" and real(module))
    cfg = Config.model_validate({"name": "t", "runs_dir": str(tmp_path), "model": {"base": str(tmp_path)},
                                 "export": {"gguf": ["q8_0", "q4_k_m"]}})
    problems = checks.check_export(cfg)
    assert len(problems) == 1 and "q4_k_m are K-quants" in problems[0] and "domaintune[kquant]" in problems[0]
    monkeypatch.setattr(checks, "_has", real)
    assert checks.check_export(cfg) == ([] if real("llama_cpp") else problems)
