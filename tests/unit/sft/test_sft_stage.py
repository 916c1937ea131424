"""The SFT stage on a tiny random model: each method trains, held-out loss falls, auto escalates."""

import json

import pytest

from domaintune import models
from domaintune.artifacts import RunDir
from domaintune.config import Config
from domaintune.sft import stage as sft_stage

pytestmark = pytest.mark.slow  # runs the SFT stage

QA = [("What is the wire fee?", "The wire fee is 35 dollars."),
      ("What is the SWIFT code?", "The SWIFT code is HRVBUS6S."),
      ("What is the hotline?", "The hotline is 0800-462-7000."),
      ("What is the ATM limit?", "The ATM limit is 1000 dollars."),
      ("海港银行的SWIFT代码是什么？", "海港银行的SWIFT代码是HRVBUS6S。")]


def _write_data(folder):
    folder.mkdir(parents=True, exist_ok=True)
    alpaca = folder / "qa.alpaca.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}, ensure_ascii=False) + "\n"
                              for q, a in QA * 4), encoding="utf-8")
    chat = folder / "chat.openai.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}, ensure_ascii=False)
                            + "\n" for q, a in QA * 2)
                    + json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n", encoding="utf-8")
    return [{"path": str(alpaca), "name": "qa"}, {"path": str(chat), "name": "chat"}]


def _config(tmp_path, tiny_model_dir, **sft):
    return Config.model_validate({
        "name": "sft-test", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tiny_model_dir)},
        "sft": {"data": _write_data(tmp_path / "data"), "max_len": 128, "batch_size": 4, "max_steps": 2,
                "lr": 1e-3, "log_every": 1, "report_to": [], "val_fraction": 0.2, **sft}})


def _run(cfg):
    run_dir = RunDir(cfg.run_path)
    return run_dir, sft_stage.run(cfg, run_dir)


@pytest.mark.parametrize("method", ["lora", "full", "prefix"])
def test_each_method_trains_two_steps_and_saves_a_loadable_model(tmp_path, tiny_model_dir, method):
    cfg = _config(tmp_path, tiny_model_dir, method=method, **({"packing": False} if method == "prefix" else {}))
    run_dir, result = _run(cfg)
    assert result.metrics["steps"] == 2 and result.metrics["method"] == method
    assert result.metrics["quarantined"] == 1  # the row without an answer
    assert result.metrics["val_loss"] is not None and result.metrics["val_accuracy"] is not None
    model_dir = run_dir.root / "sft" / result.outputs["model"]
    model = models.load_trained(cfg.model, model_dir)
    assert model is not None
    # the chat template training used travels with the model
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(model_dir).chat_template
    quarantine = (run_dir.root / "sft" / "quarantine.jsonl").read_text(encoding="utf-8")
    assert "last message must be an assistant turn" in quarantine


def test_held_out_loss_falls_on_a_memorisable_set(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, method="full", max_steps=30, lr=3e-3, eval_every=15,
                  template="chatml")
    run_dir, _ = _run(cfg)
    rows = [json.loads(line) for line in (run_dir.root / "sft" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/loss"] for r in rows if "val/loss" in r]
    assert len(val) == 2
    first_train = rows[0]["train/loss"]
    assert val[-1] < val[0] and val[-1] < 0.6 * first_train, (first_train, val)


def test_auto_escalates_on_a_forced_miss(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, method="auto", auto={"metric": "val_loss", "target": 1e-6})
    run_dir, result = _run(cfg)
    attempts = result.metrics["attempts"]
    assert [(a["method"], a["status"]) for a in attempts] == [("qlora", "skipped"), ("lora", "missed"),
                                                              ("full", "missed")]
    assert "CUDA" in attempts[0]["reason"]
    chosen = result.metrics["method"]
    assert result.outputs["model"] == f"attempts/{chosen}/model"
    assert json.loads((run_dir.root / "sft" / "attempts.json").read_text()) == attempts
    # an interrupted auto run does not retrain attempts that finished with the same settings
    attempts_dir = run_dir.root / "sft" / "attempts"
    (attempts_dir / "full" / "result.json").unlink()  # as if the run died during the full attempt
    lora_written = (attempts_dir / "lora" / "model").stat().st_mtime_ns
    _, again = _run(cfg)
    assert (attempts_dir / "lora" / "model").stat().st_mtime_ns == lora_written  # not retrained
    assert (attempts_dir / "full" / "result.json").is_file()  # retrained
    assert again.metrics["attempts"][1]["val_loss"] == attempts[1]["val_loss"]


def test_prefix_tuning_refuses_packing(tmp_path, tiny_model_dir):
    from domaintune.config import load_config
    from domaintune.errors import ConfigError

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"name: x\nmodel: {{base: {tiny_model_dir}}}\nsft:\n  data: [{{path: a.jsonl}}]\n"
                        "  method: prefix\n  packing: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="packing: false"):
        load_config(cfg_file)


def test_sft_after_continual_pretraining_starts_from_its_merged_adapter(tmp_path, tiny_model_dir):
    """With a `train` stage before it, SFT starts from that stage's model (its LoRA merged in), and
    its own LoRA is merged on top: the output loads with load_trained(cfg.model, ...) alone."""
    import torch

    cfg = Config.model_validate({
        "name": "sft-after-cpt", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tiny_model_dir)},
        "data": {"sources": [{"path": "unused", "stream": "domain"}]},
        "mix": {"mixture": {"domain": 1}, "tokens": 1000},
        "sft": {"data": _write_data(tmp_path / "data"), "max_len": 128, "batch_size": 4, "max_steps": 2,
                "report_to": [], "method": "lora"}})
    assert cfg.previous_model_stage("sft") == "train"
    run_dir = RunDir(cfg.run_path)
    cpt = models.prepare_for_training(models.load_model(cfg.model), "lora", cfg.train.adapter)
    with torch.no_grad():  # a CPT adapter that really changes the model
        for name, p in cpt.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    models.save_trained(cpt, models.load_tokenizer(cfg.model), run_dir.stage_dir("train") / "model")
    run_dir.write_manifest("train", {"stage": "train", "fingerprint": "cpt", "outputs": {"model": "model"}})
    result = sft_stage.run(cfg, run_dir)
    out = run_dir.root / "sft" / result.outputs["model"]
    assert not models.is_adapter_dir(out) and not (run_dir.root / "sft" / "start_model").exists()
    ids = torch.tensor([[5, 6, 7, 8]])
    base = models.load_model(cfg.model).eval()
    cpt_logits = cpt.eval()(input_ids=ids).logits
    sft_logits = models.load_trained(cfg.model, out).eval()(input_ids=ids).logits
    base_gap = (sft_logits - base(input_ids=ids).logits).abs().max()
    cpt_gap = (sft_logits - cpt_logits).abs().max()
    assert cpt_gap < base_gap  # SFT moved the CPT model a little; it did not restart from the base
