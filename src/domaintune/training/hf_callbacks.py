"""Our fault-tolerance machinery inside HF/trl trainers (reward model, DPO), through their public
callback API rather than a copy of the training loop, and the check that an HF checkpoint loads.

* NaN/inf guard: `StepGuard` judges every optimizer step just before it is applied; a skipped step
  drops the gradients, so the weights stay unchanged.
* Preemption: `PreemptionFlag` turns the first SIGTERM/SIGINT into "save a checkpoint at this step
  boundary and stop" (`hf_trainer.train_guarded` then raises `Preempted`, exit code 75).
* Heartbeat: the stage's `Heartbeat`, after every step (the same writer and format as our own loop).
* Resume: training/resume.py chooses the checkpoint (one policy for HF and our own checkpoints).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from domaintune.console import progress
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.metrics_log import MetricsLog

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")


def grad_norm(model) -> float:
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class GuardCallback(TrainerCallback):
    """Plugs StepGuard, PreemptionFlag, heartbeat, metrics.jsonl and a progress bar into a Trainer."""

    def __init__(self, phase: str, out_dir: Path, guard: StepGuard, preempt: PreemptionFlag, heartbeat: Heartbeat,
                 show_progress: bool = True):
        self.phase, self.out_dir, self.guard, self.preempt = phase, Path(out_dir), guard, preempt
        self.heartbeat = heartbeat.for_phase(phase)
        self.preempted_at: int | None = None
        self.records: list[dict[str, Any]] = []
        self._log: MetricsLog | None = None
        self._bar = progress(disable=not show_progress)
        self._task = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._log = MetricsLog(self.out_dir / "metrics.jsonl", resume_step=state.global_step)
        self.records = list(self._log.records)
        self._bar.start()
        self._task = self._bar.add_task(self.phase, total=state.max_steps, completed=state.global_step, info="")

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        step, norm = state.global_step + 1, grad_norm(model)
        # HF trainers do not hand the step's loss to callbacks; a non-finite loss always makes the
        # gradients non-finite, so the gradient norm decides (the diagnostics record the loss as NaN).
        loss = 0.0 if math.isfinite(norm) else math.nan
        if not self.guard.finite(step, loss, norm, rows=[]):
            optimizer.zero_grad(set_to_none=True)  # params without grads are left untouched by the step
            self._bar.console.print(f"  [yellow]{self.phase} step {step}: non-finite gradient; step skipped "
                                    f"(weights unchanged)[/]")

    def on_step_end(self, args, state, control, **kwargs):
        if args.process_index == 0:  # the supervisor's hang watchdog reads this
            self.heartbeat.beat(state.global_step)
        if self._task is not None:
            self._bar.update(self._task, completed=state.global_step)
        if self.preempt.requested:
            control.should_save = True  # the trainer saves at this step boundary, then stops
            control.should_training_stop = True
            self.preempted_at = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        rec = {"step": state.global_step, **{k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}}
        self.records.append(rec)
        if self._log is not None:
            self._log.log(rec)
        shown = {k: v for k, v in rec.items() if k in ("loss", "eval_loss", "accuracy", "eval_accuracy",
                                                        "rewards/margins", "eval_rewards/margins")}
        if shown and self._task is not None:
            self._bar.update(self._task, info=" · ".join(f"{k} {v:.3f}" for k, v in shown.items()))

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Stop the progress bar and close metrics.jsonl (also when training raised)."""
        self._bar.stop()
        self._task = None
        if self._log is not None:
            self._log.close()
            self._log = None


# --------------------------------------------------------------------------- HF checkpoints
def list_hf_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def verify_hf_checkpoint(path: Path) -> str | None:
    """None if the checkpoint loads (trainer state, weights, optimizer), else what is wrong.

    HF writes a checkpoint file by file (not atomically), so a crash or a full disk can leave a
    folder that looks complete by name; the weights are read fully, tensors-only."""
    from safetensors.torch import load_file

    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable trainer_state.json: {exc}"
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        return f"no weights ({' or '.join(WEIGHT_FILES)})"
    try:
        load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        return f"{weights.name} does not load: {exc}"
    optimizer = path / "optimizer.pt"
    if not optimizer.is_file():
        return "missing optimizer.pt"
    try:
        torch.load(optimizer, map_location="cpu", weights_only=True)
    except Exception as exc:
        return f"optimizer.pt does not load: {type(exc).__name__}"
    return None
