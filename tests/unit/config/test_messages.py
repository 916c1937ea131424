"""Messages name the config section actually in use (they used to say train.* for SFT and align)."""

import pytest
import torch

from domaintune import models
from domaintune.config import Config
from domaintune.errors import CheckpointError, ModelError, TrainingAborted
from domaintune.training.autoeval import plateau_reason
from domaintune.training.guards import StepGuard
from domaintune.training.hf_trainer import FaultTolerance
from domaintune.training.resume import OwnCheckpoints, ResumePolicy, choose_checkpoint


def test_guard_names_the_section_in_use(tmp_path):
    guard = StepGuard("stop", 5, None, tmp_path, section="sft")
    with pytest.raises(TrainingAborted, match=r"sft\.guards\.nan_policy is 'stop'.*lower sft\.optim\.lr"):
        guard.finite(3, float("nan"), 1.0, rows=[])
    align = StepGuard("skip", 1, None, tmp_path, section="align", lr_key="align.dpo.lr or align.reward.lr")
    with pytest.raises(TrainingAborted, match=r"align\.guards\.max_bad_steps.*lower align\.dpo\.lr"):
        align.finite(1, float("inf"), 1.0, rows=[])


def test_align_fault_tolerance_comes_from_align_not_train():
    cfg = Config.model_validate({"name": "t", "model": {"base": "a/b"}, "train": {"checkpoint": {"save_every": 7}},
                                 "align": {"data": {"domain": ["d.jsonl"]}, "checkpoint": {"save_every": 3},
                                           "guards": {"nan_policy": "stop"}}})
    ft = FaultTolerance.from_section(cfg.align, "align")
    assert (ft.save_every, ft.nan_policy, ft.section) == (3, "stop", "align")


def test_resume_qlora_and_auto_eval_messages_take_the_key(tmp_path):
    with pytest.raises(CheckpointError, match=r"^sft\.checkpoint\.resume: checkpoint"):
        choose_checkpoint(OwnCheckpoints(tmp_path / "ckpts"), {}, ResumePolicy(str(tmp_path / "missing"), False, "sft"),
                          lambda m: None)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match=r"^sft\.method 'qlora' needs a CUDA GPU"):
            models._bnb_4bit_kwargs(torch.float32, "sft.method")
    history = [(i, i * 1_000_000, 0.5) for i in range(1, 4)]
    assert "sft.auto_eval.min_gain_per_mtokens" in plateau_reason(history, 3, 1.0, "acc", section="sft")
