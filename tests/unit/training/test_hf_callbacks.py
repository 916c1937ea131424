import os
import shutil
import signal

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from domaintune.align import reward
from domaintune.artifacts import HEARTBEAT, RunDir
from domaintune.config import AdapterConfig
from domaintune.errors import CheckpointError, Preempted, TrainingAborted
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.hf_callbacks import GuardCallback, list_hf_checkpoints, verify_hf_checkpoint
from domaintune.training.hf_trainer import FaultTolerance, train_guarded
from domaintune.training.resume import HFCheckpoints, ResumePolicy, choose_checkpoint
from fixtures.preferences import separable_rows

pytestmark = pytest.mark.slow  # trains with HF trainers


class _Args:
    process_index = 0


class _State:
    global_step = 3
    max_steps = 10


def _callback(tmp_path, policy="skip", max_bad=3, heartbeat=None):
    heartbeat = heartbeat or Heartbeat(tmp_path / HEARTBEAT, "align")
    return GuardCallback("test", tmp_path, StepGuard(policy, max_bad, None, tmp_path / "diag"), PreemptionFlag(),
                         heartbeat, show_progress=False)


def choose_hf_checkpoint(root, key, policy, warn):
    return choose_checkpoint(HFCheckpoints(root), key, policy, warn)


def _nan_grads():
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    model.weight.grad[0, 0] = float("nan")
    return model, torch.optim.AdamW(model.parameters())


def test_non_finite_gradient_skips_the_step_without_touching_weights(tmp_path):
    cb = _callback(tmp_path)
    model, opt = _nan_grads()
    before = model.weight.detach().clone()
    cb.on_pre_optimizer_step(_Args(), _State(), None, model=model, optimizer=opt)
    opt.step()
    assert torch.equal(model.weight, before) and cb.guard.skipped == 1


def test_nan_policy_stop_aborts_with_diagnostics(tmp_path):
    cb = _callback(tmp_path, policy="stop")
    model, opt = _nan_grads()
    with pytest.raises(TrainingAborted) as err:
        cb.on_pre_optimizer_step(_Args(), _State(), None, model=model, optimizer=opt)
    assert err.value.exit_code == 4 and list((tmp_path / "diag").glob("bad_step_*.json"))


def test_too_many_consecutive_bad_steps_abort(tmp_path):
    cb = _callback(tmp_path, max_bad=2)
    cb.on_pre_optimizer_step(_Args(), _State(), None, model=_nan_grads()[0], optimizer=_nan_grads()[1])
    model, opt = _nan_grads()
    with pytest.raises(TrainingAborted, match="2 consecutive bad steps"):
        cb.on_pre_optimizer_step(_Args(), _State(), None, model=model, optimizer=opt)


class _SigtermAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step; handled at the step boundary


def _reward_trainer(tiny_model_dir, out, callbacks, max_steps=6):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rm = reward.reward_model_from(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok, seed=0)
    s = reward.RewardSettings(1, max_steps, 1e-3, 4, 64, 0, True)
    return reward.build_reward_trainer(rm, tok, separable_rows(24), s, out, FaultTolerance(save_every=2)
                                       .checkpoint_args(), callbacks,
                                       peft_config=reward.reward_peft_config(AdapterConfig(r=4)))


def test_sigterm_saves_at_the_step_boundary_then_resume_picks_the_newest_intact(tiny_model_dir, tmp_path):
    root = tmp_path / "checkpoints"
    cb = _callback(tmp_path)
    trainer = _reward_trainer(tiny_model_dir, root, [cb, _SigtermAt(3)])
    with pytest.raises(Preempted) as err:
        train_guarded(trainer, cb, None, cb.preempt)
    assert err.value.exit_code == 75 and cb.preempted_at == 3
    assert signal.getsignal(signal.SIGTERM) is not cb.preempt._handle  # handlers restored
    assert [p.name for p in list_hf_checkpoints(root)] == ["checkpoint-2", "checkpoint-3"]
    assert (tmp_path / HEARTBEAT).is_file() and (tmp_path / "metrics.jsonl").read_text()

    # a newer checkpoint with truncated weights is skipped with a warning
    shutil.copytree(root / "checkpoint-3", root / "checkpoint-4")
    weights = root / "checkpoint-4" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert verify_hf_checkpoint(root / "checkpoint-4") is not None
    warnings = []
    key = {"settings": 1}
    choose_hf_checkpoint(root, key, ResumePolicy(), warnings.append)  # first call records the key
    picked = choose_hf_checkpoint(root, key, ResumePolicy(), warnings.append)
    assert picked == root / "checkpoint-3" and "checkpoint-4" in warnings[0]

    cb2 = _callback(tmp_path)
    resumed = _reward_trainer(tiny_model_dir, root, [cb2])
    train_guarded(resumed, cb2, picked, cb2.preempt)
    assert resumed.state.global_step == 6
    assert cb2.records[0]["step"] == 1 and max(r["step"] for r in cb2.records) == 6  # log reads as one run

    (root / "checkpoint-6" / "trainer_state.json").write_text("{truncated")
    explicit = ResumePolicy(resume=str(root / "checkpoint-6"))
    with pytest.raises(CheckpointError, match="checkpoint-6 is unusable"):
        choose_hf_checkpoint(root, key, explicit, warnings.append)
    other_phase = tmp_path / "other" / "checkpoints"
    assert choose_hf_checkpoint(other_phase, key, explicit, warnings.append) is None  # not this phase's
    with pytest.raises(CheckpointError, match="settings changed") as err:
        choose_hf_checkpoint(root, {"settings": 2}, ResumePolicy(), warnings.append)
    assert "settings: 1 -> 2" in str(err.value)  # the same diff-listing policy as our own checkpoints


def test_supervisor_watchdog_sees_the_align_phase_heartbeat(tmp_path):
    import time

    from domaintune.supervise import beat_since

    since = time.time() - 1
    run_dir = RunDir(tmp_path / "run")
    phase_dir = run_dir.stage_dir("align") / "dpo"
    phase_dir.mkdir(parents=True)
    cb = _callback(phase_dir, heartbeat=Heartbeat(run_dir.heartbeat_path("align"), "align"))

    class Control:
        should_save = should_training_stop = False

    cb.on_step_end(_Args(), _State(), Control())
    stage, beat = beat_since(run_dir, since)
    assert stage == "align" and beat["step"] == 3 and beat["phase"] == "test"
    assert beat_since(run_dir, time.time() + 10) is None  # stale beats do not count
