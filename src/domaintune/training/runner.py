"""What the own-loop training stages (CPT `train`, `sft`) share: the builders that turn a
training config section into loop settings, guards, checkpointing and reporting, the trainable
model, and `run_loop`, which runs `train_loop` with reporting, guards and preemption handled.

The builders are the only code that reads a training section's fields, so the config's layout
is known in one place. A section is passed with its name (`train`, `sft`) for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from domaintune import models
from domaintune.config import Config, ModelConfig
from domaintune.console import console
from domaintune.training.autoeval import AutoEval
from domaintune.training.checkpoint import read_meta
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.loop import Checkpointing, LoopSettings, steps_per_epoch, train_loop
from domaintune.training.reporting import ReportSettings, StepReporter
from domaintune.training.resume import OwnCheckpoints, ResumePolicy, choose_checkpoint

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # config name -> accelerate's mixed_precision


@dataclass(frozen=True)
class TrainingSection:
    """A training stage's config section (TrainConfig, SFTConfig) and its name in messages."""

    name: str
    cfg: Any


def warn(message: str) -> None:
    console.print(f"  [yellow]warning:[/] {message}")


def make_accelerator(section: TrainingSection, device: str):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=PRECISION[section.cfg.precision], cpu=device == "cpu")


def result_settings(cfg: Config, section: TrainingSection) -> dict[str, Any]:
    """The section's settings that decide the result (what resuming across a change must list); the
    schema marks the rest (logging, resume policy) volatile."""
    return cfg.result_section(section.name)


def loop_settings(section: TrainingSection, seed: int, dataset, streams, pad_id: int, n_params: int) -> LoopSettings:
    b, o, g = section.cfg.batch, section.cfg.optim, section.cfg.logging
    total = b.max_steps or b.epochs * steps_per_epoch(list(dataset["bucket"]), list(dataset["length"]),
                                                      b.batch_size, b.batch_tokens, b.grad_accum)
    return LoopSettings(batch_size=b.batch_size, batch_tokens=b.batch_tokens, grad_accum=b.grad_accum,
                        total_steps=total, lr=o.lr, weight_decay=o.weight_decay, warmup_ratio=o.warmup_ratio,
                        scheduler=o.scheduler, max_grad_norm=o.max_grad_norm, log_every=g.log_every,
                        eval_every=g.eval_every, seed=seed, stream_names=tuple(streams), pad_id=pad_id,
                        n_params=n_params,
                        # sections without the key (sft) take the loop's default
                        packed_attention=getattr(section.cfg, "packed_attention", LoopSettings.packed_attention))


def step_guard(section: TrainingSection, diagnostics_dir: Path) -> StepGuard:
    t = section.cfg.guards
    return StepGuard(t.nan_policy, t.max_bad_steps, t.spike_factor, diagnostics_dir,
                     rollback=t.spike_policy == "rollback", max_rollbacks=t.max_rollbacks, section=section.name)


def auto_eval(section: TrainingSection, tokenizer, total_steps: int) -> AutoEval | None:
    t = section.cfg
    return AutoEval(t.auto_eval, tokenizer, total_steps, section=section.name) if t.auto_eval else None


def report_settings(section: TrainingSection, run_name: str, config: dict[str, Any]) -> ReportSettings:
    g = section.cfg.logging
    return ReportSettings(g.report_to, run_name, config, g.log_every, section.name)


def checkpointing(section: TrainingSection, root: Path, current: dict[str, Any]) -> Checkpointing:
    """Checkpoints in `root`, resuming from an interrupted attempt of the same settings (training/resume.py)."""
    t = section.cfg.checkpoint
    policy = ResumePolicy(t.resume, t.allow_config_change, section.name)
    resume_from = choose_checkpoint(OwnCheckpoints(root), current, policy, warn)
    return Checkpointing(root, t.save_every, t.keep_last, {"resume_config": current}, resume_from)


def build_trainable(start: ModelConfig, method: str, section: TrainingSection, seed: int, device: str,
                    prefix_tokens: int | None = None):
    """The start model with `method` applied (LoRA/QLoRA adapter, full, or prefix tuning);
    returns (model, trainable parameter count)."""
    model = models.load_model(start, device=device, quantize_4bit=method == "qlora",
                              method_key=f"{section.name}.method")
    torch.manual_seed(seed)  # adapter / prefix initialisation is random
    if method == "prefix":
        model = models.prepare_prefix_tuning(model, prefix_tokens)
    else:
        model = models.prepare_for_training(model, method, section.cfg.adapter,
                                            train_embeddings=section.cfg.train_embeddings,
                                            activation_checkpointing=section.cfg.activation_checkpointing)
    trainable, total = models.trainable_parameters(model)
    console.print(f"  {method}: training {trainable:,} of {total:,} parameters ({trainable / total:.2%}) on {device}")
    return model, trainable


@dataclass
class LoopOutcome:
    model: Any  # unwrapped
    records: list[dict[str, Any]]
    rollbacks: list[dict[str, Any]]  # spike rollbacks: {step, rolled_back_to, train/loss}
    summary: dict[str, Any]
    stop_reason: str | None  # auto-eval's early stop, if it stopped the run


def start_step(ckpt: Checkpointing, total_steps: int) -> int:
    if ckpt.resume_from is None:
        return 0
    step = int(read_meta(ckpt.resume_from)["step"])
    console.print(f"  resuming from {ckpt.resume_from.name} (step {step} of {total_steps})")
    return step


def run_loop(model, dataset, s: LoopSettings, accelerator, *, section: TrainingSection, out_dir: Path,
             heartbeat: Heartbeat, ckpt: Checkpointing, report: ReportSettings, heldout=None, tokenizer=None,
             resume_step: int = 0) -> LoopOutcome:
    """`train_loop` with its reporter, step guard, auto-eval (when the section sets one) and
    preemption handling."""
    reporter = StepReporter(out_dir, report, heartbeat, s.total_steps, s.stream_names, resume_step=resume_step)
    guard = step_guard(section, out_dir / "diagnostics")
    checker = auto_eval(section, tokenizer, s.total_steps)
    preempt = PreemptionFlag().install()
    try:
        with reporter:
            summary = train_loop(model, dataset, s, accelerator, reporter, heldout=heldout, ckpt=ckpt, guard=guard,
                                 preempt=preempt, auto_eval=checker)
    finally:
        preempt.restore()
    return LoopOutcome(accelerator.unwrap_model(model), reporter.records, reporter.rollbacks, summary,
                       checker.stop_reason if checker is not None else None)
