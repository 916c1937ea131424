"""Golden values: the per-step training losses of CPT, SFT, the reward model and DPO on the tiny
model (fp32, one thread, fixed seeds), pinned as numbers (torchtune's `_fetch_expected_loss_values`).

The invariant tests (resume == clean, packed == alone) pass even when an upgrade or a loop change
shifts every loss the same way; these do not. A deliberate change to a loop, its loss
normalisation or its defaults must update EXPECTED. Recorded with the package versions in
RECORDED_WITH: with other versions the test is skipped (not failed), since a library may change
the numbers legitimately; re-record them then.
"""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import torch

RECORDED_WITH = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "peft": "0.21.2", "trl": "1.16.0",
                 "accelerate": "1.15.0"}
EXPECTED = {  # per optimizer step
    "cpt": [6.238957, 6.239045, 6.000125, 5.898704],
    "sft": [6.258287, 6.126272, 6.151890, 6.098598],
    "reward": [0.760630, 0.677992, 0.620823, 0.641971],
    "dpo": [0.693147, 0.527316, 0.429905, 0.386684],
}


@pytest.fixture(autouse=True)
def _same_versions():
    found = {name: version(name) for name in RECORDED_WITH}
    if found != RECORDED_WITH:
        pytest.skip(f"golden losses were recorded with {RECORDED_WITH}; installed: {found} (re-record them)")
    torch.set_num_threads(1)


def _close(got: list[float], name: str) -> None:
    want = EXPECTED[name]
    assert len(got) == len(want), (name, got)
    assert all(abs(g - w) <= 1e-4 + 1e-4 * abs(w) for g, w in zip(got, want)), (name, got, want)


def test_cpt_loop_losses(tiny_model_dir):
    from accelerate import Accelerator
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from domaintune import models
    from domaintune.config import AdapterConfig
    from domaintune.training.loop import LoopSettings, train_loop

    rows = [{"input_ids": list(range(5 + i % 7, 40 + i % 7)), "segment_lengths": [20, 15], "segment_streams": [0, 1],
             "bucket": 64, "length": 35} for i in range(16)]
    torch.manual_seed(0)
    model = models.prepare_for_training(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "lora",
                                        AdapterConfig(r=4, dropout=0.0))
    s = LoopSettings(batch_size=4, batch_tokens=None, grad_accum=2, total_steps=4, lr=1e-2, weight_decay=0.0,
                     warmup_ratio=0.25, scheduler="cosine", max_grad_norm=1.0, log_every=1, eval_every=None, seed=0,
                     stream_names=("a", "b"), pad_id=0)
    records = []
    train_loop(model, Dataset.from_list(rows), s, Accelerator(cpu=True), records.append)
    _close([r["train/loss"] for r in records], "cpt")


def test_sft_stage_losses(tiny_model_dir, tmp_path):
    from domaintune.artifacts import RunDir
    from domaintune.config import Config
    from domaintune.sft import stage as sft_stage

    qa = [{"instruction": f"What is fee {i}?", "input": "", "output": f"Fee {i} is {i * 5} dollars."}
          for i in range(12)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    cfg = Config.model_validate({
        "name": "golden", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tiny_model_dir)},
        "sft": {"data": [{"path": str(tmp_path / "qa.jsonl")}], "max_len": 64, "batch_size": 4, "max_steps": 4,
                "lr": 1e-3, "report_to": [], "val_fraction": 0.2, "adapter": {"dropout": 0.0}, "template": "chatml"}})
    run_dir = RunDir(cfg.run_path)
    sft_stage.run(cfg, run_dir)
    lines = (run_dir.root / "sft" / "metrics.jsonl").read_text().splitlines()
    _close([json.loads(x)["train/loss"] for x in lines], "sft")


def _log_losses(trainer) -> list[float]:
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_reward_model_losses(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune.align import reward
    from domaintune.config import AdapterConfig
    from fixtures.preferences import separable_rows

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rm = reward.reward_model_from(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok, seed=0)
    s = reward.RewardSettings(1, 4, 1e-3, 4, 64, 0, True)
    trainer = reward.build_reward_trainer(rm, tok, separable_rows(16), s, tmp_path, {"save_strategy": "no"}, [],
                                          peft_config=reward.reward_peft_config(AdapterConfig(r=4, dropout=0.0)))
    _close(_log_losses(trainer), "reward")


def test_dpo_losses(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune.align import dpo
    from domaintune.config import AdapterConfig
    from domaintune.models import build_peft_config
    from fixtures.preferences import separable_rows

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    s = dpo.DPOSettings(beta=0.1, sft_weight=0.0, epochs=1, max_steps=4, lr=5e-3, batch_size=4, grad_accum=1,
                        max_len=64, eval_every=None, seed=0, use_cpu=True)
    trainer = dpo.build_dpo_trainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok, separable_rows(16), [],
                                    s, tmp_path, {"save_strategy": "no"}, [],
                                    peft_config=build_peft_config(AdapterConfig(r=4, dropout=0.0)))
    _close(_log_losses(trainer), "dpo")
