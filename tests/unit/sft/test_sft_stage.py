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
    model = models.load_trained(model_dir, base=cfg.model).model
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
    its own LoRA is merged on top: the output loads with load_trained(dir, base=cfg.model) alone."""
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
    sft_logits = models.load_trained(out, base=cfg.model).model.eval()(input_ids=ids).logits
    base_gap = (sft_logits - base(input_ids=ids).logits).abs().max()
    cpt_gap = (sft_logits - cpt_logits).abs().max()
    assert cpt_gap < base_gap  # SFT moved the CPT model a little; it did not restart from the base


def test_auto_records_every_attempts_loss_curves_as_outputs(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, method="auto", auto={"metric": "val_loss", "target": 1e-6}, max_steps=1)
    run_dir, result = _run(cfg)
    plots = {k: v for k, v in result.outputs.items() if k.startswith("loss_curves")}
    assert plots == {"loss_curves/lora": "attempts/lora/loss_curves.png",
                     "loss_curves/full": "attempts/full/loss_curves.png"}
    assert all((run_dir.root / "sft" / v).is_file() for v in plots.values())


def test_spike_policy_rollback_restores_the_last_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    """sft.spike_policy: rollback was accepted and ignored (SFT's guard never rolled back)."""
    from domaintune.training.guards import StepGuard

    seen = []

    def spike_at_step_4(self, loss):  # a loss spike on demand; the real rule needs a real spike
        seen.append(loss)
        if len(seen) == 4:
            self.spikes += 1
            return True
        return False

    monkeypatch.setattr(StepGuard, "spike", spike_at_step_4)
    cfg = _config(tmp_path, tiny_model_dir, method="lora", max_steps=5, save_every=2, keep_last=5, spike_factor=2.0,
                  spike_policy="rollback", max_rollbacks=1)
    run_dir, result = _run(cfg)
    assert [(r["step"], r["rolled_back_to"]) for r in result.metrics["spike_rollbacks"]] == [(4, 2)]
    assert result.metrics["rollbacks"] == 1 and result.metrics["batches_skipped_by_rollback"] == 2
    assert (run_dir.root / "sft" / "diagnostics" / "spike_rollback_00000004.json").is_file()
    steps = [json.loads(x)["step"] for x in (run_dir.root / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # the log reads as one run: steps 3-4 redone on later batches


def test_auto_eval_scores_sft_checkpoints_and_stops_early(tmp_path, tiny_model_dir):
    """sft.auto_eval was accepted and ignored; now it scores the tasks during SFT and may stop it."""
    rows = [{"q": f"Fee number {i}?", "options": ["5 dollars", "35 dollars"], "gold": i % 2} for i in range(6)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "qa.yaml").write_text(
        "name: qa\nversion: 1\nkind: multiple_choice\ndata: {path: qa.jsonl}\n"
        "fields: {question: q, choices: options, answer: gold, answer_format: index}\n"
        "prompt: {template: \"{question}\\nAnswer:\", continuation: text}\n", encoding="utf-8")
    auto_eval = {"every": 1, "tasks": [{"task": str(tmp_path / "qa.yaml"), "group": "domain"}], "limit": 4,
                 "patience": 2, "min_gain_per_mtokens": 1e9}
    cfg = _config(tmp_path, tiny_model_dir, method="lora", max_steps=6, auto_eval=auto_eval)
    run_dir, result = _run(cfg)
    m = result.metrics
    assert m["steps"] == 2 and m["stop_reason"].startswith("auto-eval plateau")
    assert "sft.auto_eval.min_gain_per_mtokens" in m["stop_reason"] and "autoeval/domain_score" in m
    logged = [json.loads(x) for x in (run_dir.root / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "autoeval/qa/acc" in r] == [1, 2]


def test_a_corrupt_result_file_is_one_clear_error(tmp_path):
    from domaintune.errors import CheckpointError

    (tmp_path / "model").mkdir()
    (tmp_path / "result.json").write_text('{"key": "abc", "res')
    with pytest.raises(CheckpointError, match=r"result\.json is unreadable .*delete it to train this attempt again"):
        sft_stage.recorded_result(tmp_path, {"k": 1})
