"""Running an HF/trl trainer (reward model, DPO) under our fault tolerance: its checkpoint
arguments, signal handling around `trainer.train()`, and the trainer options we always set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domaintune.errors import Preempted
from domaintune.training.guards import PreemptionFlag
from domaintune.training.hf_callbacks import GuardCallback
from domaintune.training.resume import ResumePolicy


@dataclass(frozen=True)
class FaultTolerance:
    """The fault-tolerance settings of a stage that trains through HF trainers (align)."""

    nan_policy: str = "skip"
    max_bad_steps: int = 5
    save_every: int | None = None
    keep_last: int = 2
    resume: str = "auto"
    allow_config_change: bool = False
    section: str = "align"  # the config section these come from, named in messages

    @classmethod
    def from_section(cls, s, section: str) -> FaultTolerance:
        """From a training section's `checkpoint` and `guards` blocks."""
        c, g = s.checkpoint, s.guards
        return cls(g.nan_policy, g.max_bad_steps, c.save_every, c.keep_last, c.resume, c.allow_config_change, section)

    @property
    def resume_policy(self) -> ResumePolicy:
        return ResumePolicy(self.resume, self.allow_config_change, self.section)

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
