"""NaN/inf and spike guards inside the real training loop, on a tiny model."""

import json
import shutil

import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import AutoModelForCausalLM

from domaintune.errors import TrainingAborted
from domaintune.training.checkpoint import list_checkpoints, read_meta
from domaintune.training.guards import StepGuard
from domaintune.training.loop import Checkpointing, LoopSettings, train_loop

pytestmark = pytest.mark.slow  # trains the tiny model


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


def _run(tiny_model_dir, tmp_path, calls, policy="skip", spike=None, steps=6, rollback=False, ckpt=None):
    torch.manual_seed(0)
    model = Sabotage(AutoModelForCausalLM.from_pretrained(tiny_model_dir), calls)
    guard = StepGuard(policy, 3, spike, tmp_path / "diag", rollback=rollback)
    snapshots, records = [], []

    def on_step(rec):
        records.append(rec)
        snapshots.append(model.model.lm_head.weight.detach().clone())

    summary = train_loop(model, _data(), _settings(steps), Accelerator(cpu=True), on_step, guard=guard, ckpt=ckpt)
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


def test_spike_rollback_restores_the_last_checkpoint_and_skips_the_batches_since(tiny_model_dir, tmp_path):
    ckpt = Checkpointing(tmp_path / "ckpt", save_every=2, keep_last=10, meta={})
    records, snaps, summary = _run(tiny_model_dir, tmp_path, {8: 40.0}, spike=2.0, steps=9, rollback=True, ckpt=ckpt)
    rollback = next(r for r in records if "rolled_back_to" in r)
    assert rollback["step"] == 8 and rollback["rolled_back_to"] == 6
    assert summary["rollbacks"] == 1 and summary["batches_skipped_by_rollback"] == 2
    assert (tmp_path / "diag" / "spike_rollback_00000008.json").is_file()
    steps = [r["step"] for r in records if "rolled_back_to" not in r]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 7, 8, 9]  # steps 7-8 undone, then redone on later batches
    first7, second7 = (r for r in records if r["step"] == 7 and "rolled_back_to" not in r)
    assert first7["rows"] != second7["rows"] and rollback["rows"] != second7["rows"]
    # equivalent to: restore the step-6 checkpoint, skip the 2 batches of steps 7-8, train on
    ref_root = tmp_path / "ref"
    shutil.copytree(tmp_path / "ckpt" / "step-00000006", ref_root / "step-00000006")
    meta = json.loads((ref_root / "step-00000006" / "meta.json").read_text())
    (ref_root / "step-00000006" / "meta.json").write_text(json.dumps({**meta, "batches_skipped": 2}))
    ref = Checkpointing(ref_root, save_every=None, keep_last=10, meta={}, resume_from=ref_root / "step-00000006")
    ref_records, ref_snaps, _ = _run(tiny_model_dir, tmp_path / "r0", {}, steps=9, ckpt=ref)
    assert [r["rows"] for r in ref_records] == [r["rows"] for r in records[-3:]]
    assert torch.allclose(ref_snaps[-1], snaps[-1], atol=1e-6)
    # a checkpoint written after the rollback records the skipped batches, so resume stays sample-exact
    assert read_meta(list_checkpoints(tmp_path / "ckpt")[-1])["batches_skipped"] == 2
    resumed = Checkpointing(tmp_path / "ckpt", save_every=None, keep_last=10, meta={},
                            resume_from=tmp_path / "ckpt" / "step-00000008")
    again, again_snaps, _ = _run(tiny_model_dir, tmp_path / "r", {}, spike=2.0, steps=9, rollback=True, ckpt=resumed)
    assert again[-1]["rows"] == records[-1]["rows"]
    assert torch.allclose(again_snaps[-1], snaps[-1], atol=1e-6)


def test_spike_rollback_without_a_checkpoint_skips_the_update(tiny_model_dir, tmp_path):
    records, snaps, summary = _run(tiny_model_dir, tmp_path, {8: 40.0}, spike=2.0, steps=9, rollback=True)
    assert records[7].get("spike") and records[7].get("skipped") and summary["rollbacks"] == 0
    assert torch.equal(snaps[6], snaps[7])


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; an fp16 Accelerator needs a fresh one (and leaves none)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _fp16_run(tiny_model_dir, tmp_path, accelerator, calls):
    torch.manual_seed(0)
    model = Sabotage(AutoModelForCausalLM.from_pretrained(tiny_model_dir), calls).to(accelerator.device)
    records, snapshots = [], []

    def on_step(rec):
        records.append(rec)
        snapshots.append(model.model.lm_head.weight.detach().clone())

    summary = train_loop(model, _data(), _settings(5), accelerator, on_step,
                         guard=StepGuard("skip", 3, None, tmp_path / "diag"))
    return records, snapshots, summary


def test_fp16_grad_scaler_survives_a_skipped_step(tiny_model_dir, tmp_path, fresh_accelerate_state):
    """Bug: a step the NaN guard skipped bypassed the grad scaler's update, so the next step's
    unscale_ raised. Here a CPU GradScaler stands in for CUDA's (same torch code path)."""
    accelerator = Accelerator(mixed_precision="fp16", cpu=True)
    accelerator.native_amp, accelerator.scaler = True, torch.amp.GradScaler("cpu")
    records, snaps, summary = _fp16_run(tiny_model_dir, tmp_path, accelerator, {2: float("nan")})
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[1].get("skipped") and summary["skipped_steps"] == 1
    assert torch.equal(snaps[0], snaps[1]) and not torch.equal(snaps[1], snaps[2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a CUDA grad scaler needs a GPU")
def test_fp16_on_cuda_skips_a_bad_step_and_keeps_training(tiny_model_dir, tmp_path, fresh_accelerate_state):
    accelerator = Accelerator(mixed_precision="fp16")
    assert accelerator.scaler is not None
    records, snaps, summary = _fp16_run(tiny_model_dir, tmp_path, accelerator, {2: float("nan")})
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[1].get("skipped") and summary["skipped_steps"] == 1
    assert torch.equal(snaps[0], snaps[1])
