"""NaN/inf and spike guards inside the real training loop, on a tiny model."""

import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import AutoModelForCausalLM

from domaintune.errors import TrainingAborted
from domaintune.train.guards import StepGuard
from domaintune.train.loop import LoopSettings, train_loop


class Sabotage(torch.nn.Module):
    """Wraps a model; on chosen forward calls multiplies the logits (by nan, or by a large factor)."""

    def __init__(self, model, calls: dict[int, float]):
        super().__init__()
        self.model, self.calls, self.n = model, calls, 0

    def forward(self, **kw):
        out = self.model(**kw)
        self.n += 1
        if self.n in self.calls:
            out.logits = out.logits * self.calls[self.n]
        return out


def _data():
    rows = [{"input_ids": list(range(5 + i % 7, 40 + i % 7)), "segment_lengths": [35], "segment_streams": [0],
             "bucket": 64, "length": 35} for i in range(16)]
    return Dataset.from_list(rows)


def _settings(steps=6):
    return LoopSettings(batch_size=2, batch_tokens=None, grad_accum=1, total_steps=steps, lr=1e-3, weight_decay=0,
                        warmup_ratio=0, scheduler="constant", max_grad_norm=1.0, log_every=1, eval_every=None,
                        seed=0, stream_names=("s",), pad_id=0)


def _run(tiny_model_dir, tmp_path, calls, policy="skip", spike=None, steps=6):
    torch.manual_seed(0)
    model = Sabotage(AutoModelForCausalLM.from_pretrained(tiny_model_dir), calls)
    guard = StepGuard(policy, 3, spike, tmp_path / "diag")
    snapshots, records = [], []

    def on_step(rec):
        records.append(rec)
        snapshots.append(model.model.lm_head.weight.detach().clone())

    summary = train_loop(model, _data(), _settings(steps), Accelerator(cpu=True), on_step, guard=guard)
    return records, snapshots, summary


def test_nan_at_step_3_is_skipped_and_weights_stay_unchanged(tiny_model_dir, tmp_path):
    records, snaps, summary = _run(tiny_model_dir, tmp_path, {3: float("nan")})
    assert records[2].get("skipped") and not records[1].get("skipped") and not records[3].get("skipped")
    assert torch.equal(snaps[1], snaps[2])  # step 3 did not touch the weights
    assert not torch.equal(snaps[2], snaps[3])  # training continued
    assert summary["skipped_steps"] == 1


def test_nan_under_stop_policy_aborts_with_diagnostics(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingAborted, match="step 3"):
        _run(tiny_model_dir, tmp_path, {3: float("inf")}, policy="stop")
    assert (tmp_path / "diag" / "bad_step_00000003.json").is_file()


def test_consecutive_bad_steps_abort(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingAborted, match="3 consecutive bad steps"):
        _run(tiny_model_dir, tmp_path, {2: float("nan"), 3: float("nan"), 4: float("nan")})


def test_loss_spike_is_flagged(tiny_model_dir, tmp_path):
    records, _, summary = _run(tiny_model_dir, tmp_path, {8: 40.0}, spike=2.0, steps=9)
    assert records[7].get("spike") and summary["loss_spikes"] == 1
    assert not any(r.get("spike") for r in records[:7])
