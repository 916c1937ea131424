"""The export stage: a merged export carries the chat template saved with the trained model, an
adapter-only export records the base it loads onto, and both are answered from the exported
folder alone, as `domaintune chat` loads it."""

from __future__ import annotations

import json

import torch

from domaintune import models
from domaintune.artifacts import RunDir
from domaintune.config import AdapterConfig, Config, ModelConfig
from domaintune.export import stage as export_stage

TUNED_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}### assistant:{% endif %}")


def _run_with_sft_model(tmp_path, tiny_model_dir, method: str, merge: bool) -> tuple[Config, RunDir]:
    from transformers import AutoTokenizer

    cfg = Config.model_validate({
        "name": "t", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tiny_model_dir)},
        "sft": {"data": [{"path": str(tmp_path / "conversations.jsonl")}], "method": method},
        "runtime": {"device": "cpu"},
        "export": {"merge": merge, "sample_prompts": ["What is the wire fee?"], "max_new_tokens": 3}})
    run_dir = RunDir(cfg.run_path)
    model = models.load_model(ModelConfig(base=str(tiny_model_dir)))
    if method == "lora":
        torch.manual_seed(0)
        model = models.prepare_for_training(model, "lora", AdapterConfig(r=4))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = TUNED_TEMPLATE
    models.save_trained(model, tok, run_dir.stage_dir("sft") / "model")
    run_dir.write_manifest("sft", {"stage": "sft", "fingerprint": "fp-sft", "outputs": {"model": "model"},
                                   "config": {"model": cfg.section("model"), "sft": {"method": method}}})
    return cfg, run_dir


def test_adapter_only_export_records_its_base_and_loads_from_the_folder_alone(tmp_path, tiny_model_dir, capsys):
    cfg, run_dir = _run_with_sft_model(tmp_path, tiny_model_dir, "lora", merge=False)
    result = export_stage.run(cfg, run_dir)
    out = run_dir.root / "export" / "model"
    assert models.is_adapter_dir(out) and not (out / "config.json").exists()
    record = json.loads((out / "domaintune_export.json").read_text())
    assert record["model"]["base"] == str(tiny_model_dir) and record["method"] == "lora"
    assert record["source_stage"] == "sft" and record["source_fingerprint"] == "fp-sft"
    assert record["merged"] is False and record["base_commit"] is None  # a local base: no hub commit

    samples = json.loads((run_dir.root / "export" / "samples.json").read_text())
    assert result.metrics["samples"] == 1 and samples[0]["prompt"] == "What is the wire fee?"
    printed = " ".join(capsys.readouterr().out.split())
    assert "adapter for" in printed and "try: domaintune chat" in printed

    trained = models.load_trained(out)  # what `domaintune chat` does: no config, no base argument
    assert trained.meta.kind == "adapter" and trained.meta.base_from == "export"
    assert trained.tokenizer.chat_template == TUNED_TEMPLATE


def test_merged_export_carries_the_saved_template(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    cfg, run_dir = _run_with_sft_model(tmp_path, tiny_model_dir, "full", merge=True)
    export_stage.run(cfg, run_dir)
    out = run_dir.root / "export" / "model"
    assert (out / "model.safetensors").is_file() and not models.is_adapter_dir(out)
    assert AutoTokenizer.from_pretrained(out).chat_template == TUNED_TEMPLATE
    assert json.loads((out / "domaintune_export.json").read_text())["method"] == "full"
