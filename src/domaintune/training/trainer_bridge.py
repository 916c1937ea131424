"""Our fault-tolerance machinery for HF/trl trainers (reward model, DPO), through their public
callback API rather than a copy of the training loop.

* NaN/inf guard: `StepGuard` (<section>.guards.nan_policy, max_bad_steps) judges every optimizer step
  just before it is applied; a skipped step drops the gradients, so the weights stay unchanged.
* Preemption: `PreemptionFlag` turns the first SIGTERM/SIGINT into "save a checkpoint at this step
  boundary and stop"; `train_guarded` then raises `Preempted` (exit code 75).
* Heartbeat: written after every step, in the format the `--supervise` watchdog reads.
* Resume: the newest *intact* HF checkpoint (its state, weights and optimizer load); a damaged newer
  one is skipped with a warning, as train/checkpoint.py does for our own checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from domaintune.artifacts import atomic_write_json, stable_hash
from domaintune.console import progress
from domaintune.errors import CheckpointError, Preempted
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.metrics_log import MetricsLog
from domaintune.training.reporting import HEARTBEAT

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
KEY_FILE, FINISHED = "resume_key.json", "finished.json"


@dataclass(frozen=True)
class FaultTolerance:
    """A training section's fault-tolerance settings (its `checkpoint` and `guards` blocks) for HF trainers."""

    nan_policy: str = "skip"
    max_bad_steps: int = 5
    save_every: int | None = None
    keep_last: int = 2
    resume: str = "auto"
    allow_config_change: bool = False
    section: str = "align"  # the config section in use, named in messages

    @classmethod
    def from_section(cls, s, section: str) -> FaultTolerance:
        c, g = s.checkpoint, s.guards
        return cls(g.nan_policy, g.max_bad_steps, c.save_every, c.keep_last, c.resume, c.allow_config_change, section)

    def checkpoint_args(self) -> dict[str, Any]:
        """TrainingArguments for checkpointing: saves every `save_every` steps, at most `keep_last` kept."""
        if not self.save_every:
            return {"save_strategy": "no"}
        return {"save_strategy": "steps", "save_steps": self.save_every, "save_total_limit": self.keep_last}


def activation_checkpointing(enabled: bool) -> dict[str, Any]:
    """TrainingArguments for activation (gradient) checkpointing: trl turns it on by default, so it is
    always passed explicitly (the section's `activation_checkpointing`). transformers >= 5 renamed the
    argument and warns on the old name. Non-reentrant checkpointing lets gradients reach a LoRA
    adapter whose inputs come from frozen embeddings."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    args: dict[str, Any] = {name: enabled}
    if enabled:
        args[f"{name}_kwargs"] = {"use_reentrant": False}
    return args


def precision_args(precision: str) -> dict[str, bool]:
    """TrainingArguments for the section's `precision` (fp32, bf16 or fp16)."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def without_log_printer(trainer):
    """GuardCallback shows progress and metrics; drop the trainer's raw log-dict printing."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def grad_norm(model) -> float:
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class GuardCallback(TrainerCallback):
    """Plugs StepGuard, PreemptionFlag, heartbeat, metrics.jsonl and a progress bar into a Trainer."""

    def __init__(self, phase: str, out_dir: Path, guard: StepGuard, preempt: PreemptionFlag,
                 show_progress: bool = True):
        self.phase, self.out_dir, self.guard, self.preempt = phase, Path(out_dir), guard, preempt
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
            atomic_write_json(self.out_dir / HEARTBEAT, {"step": state.global_step, "time": time.time(),
                                                         "pid": os.getpid(), "phase": self.phase})
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


# --------------------------------------------------------------------------- resume
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


def choose_hf_checkpoint(root: Path, key: dict[str, Any], ft: FaultTolerance,
                         warn: Callable[[str], None]) -> Path | None:
    """The checkpoint to resume from (None: start fresh).

    A run continues only what an interrupted attempt of the *same* settings left behind: the
    settings' hash is stored next to the checkpoints; a change is refused unless
    <section>.checkpoint.allow_config_change is set (or resume=never starts over). A checkpoint named in
    <section>.checkpoint.resume is used by the phase it belongs to; the other phases resume automatically."""
    key_file, digest = root / KEY_FILE, stable_hash(key)
    if ft.resume == "never" or (root / FINISHED).is_file():
        shutil.rmtree(root, ignore_errors=True)
    explicit = Path(ft.resume) if ft.resume not in ("auto", "never") else None
    if explicit is not None and explicit.resolve().parent == root.resolve():  # named for this phase
        problem = verify_hf_checkpoint(explicit)
        if problem:
            raise CheckpointError(f"{ft.section}.checkpoint.resume: checkpoint {ft.resume} is unusable: {problem}")
        return explicit
    ckpts = list_hf_checkpoints(root)
    if ckpts and key_file.is_file() and json.loads(key_file.read_text())["key"] != digest:
        if not ft.allow_config_change:
            raise CheckpointError(f"refusing to resume from {root}: the settings changed since its checkpoints "
                                  f"were saved. Set {ft.section}.checkpoint.allow_config_change=true to resume "
                                  f"anyway, or {ft.section}.checkpoint.resume=never to start over.")
        warn(f"resuming from {root} despite changed settings ({ft.section}.checkpoint.allow_config_change)")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(key_file, {"key": digest})
    for path in reversed(ckpts):
        problem = verify_hf_checkpoint(path)
        if problem is None:
            return path
        warn(f"checkpoint {path} is unusable ({problem}); falling back to an older one")
    return None


def train_guarded(trainer, callback: GuardCallback, resume_from: Path | None, preempt: PreemptionFlag) -> None:
    """trainer.train() with signals handled; raises Preempted after a signal-triggered save."""
    preempt.install()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        preempt.restore()
        callback.close()
    if callback.preempted_at is not None:
        raise Preempted(f"{callback.phase}: stopped by signal after step {callback.preempted_at}; checkpoint saved "
                        f"in {trainer.args.output_dir}. Re-run the same command to resume.")


def mark_finished(root: Path) -> None:
    atomic_write_json(root / FINISHED, {"finished_at": time.time()})
