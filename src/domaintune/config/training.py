"""Blocks shared by the training sections (`train`, `sft`, `align`), composed rather than inherited:
each section holds exactly the blocks its stage implements.

`logging` as a whole, and the resume part of `checkpoint`, cannot change a result: they are left
out of stage fingerprints and checkpoint resume keys (see `base.result_settings`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import VOLATILE, Count, Section
from domaintune.config.eval import EvalTaskConfig

Precision = Literal["fp32", "bf16", "fp16"]
PRECISION_HELP = "Mixed precision of the training step; fp16 needs a CUDA GPU."
ACTIVATION_CHECKPOINTING_HELP = ("Recompute activations in the backward pass instead of keeping them: much less "
                                 "memory for long rows and large models, about a third more compute.")


class AdapterConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank: trainable parameters grow linearly with it.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every linear layer but the output head).")


class AutoEvalConfig(Section):
    every: int = Field(ge=1, description="Optimizer steps between benchmark evaluations during training.")
    tasks: list[EvalTaskConfig] = Field(min_length=1, description="The fast subset scored at each evaluation.")
    limit: int | None = Field(50, ge=1, description="Items per task at each evaluation (keeps it fast).")
    batch_size: int = Field(8, ge=1, description="Requests per forward pass when scoring.")
    metric: Literal["acc", "acc_norm"] = Field("acc", description="Multiple-choice metric the stopping rule "
                                                                  "reads (generation tasks: exact_match).")
    patience: int = Field(3, ge=2, description="K: the stopping rule looks at the last K evaluations.")
    min_gain_per_mtokens: float | None = Field(
        None, description="Stop when the domain metric gained less than this (accuracy points per million "
                          "trained tokens) over the last `patience` evaluations; unset: never stop early.")



class OptimConfig(Section):
    """AdamW and its learning-rate schedule."""

    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of the steps spent warming the rate up.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after the warm-up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this global norm.")


class BatchConfig(Section):
    """How many rows a step sees, and how many steps run."""

    batch_size: int = Field(8, ge=1, description="Packed rows per micro-batch (when batch_tokens is unset).")
    batch_tokens: Count | None = Field(
        None, description="Token budget per micro-batch: a batch of bucket L holds batch_tokens // L rows, "
                          "so memory stays flat across buckets.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    epochs: int = Field(1, ge=1, description="Passes over the data (ignored if max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")


class CheckpointConfig(Section):
    """Checkpoints and resume: what is kept and where a restarted run continues. None of it changes a
    result, except save_every under spike rollback (which restores the last checkpoint)."""

    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints (atomic, verified).",
                                   json_schema_extra=VOLATILE)  # decisive only under spike rollback
    keep_last: int = Field(2, ge=1, description="Checkpoints kept (older ones are deleted).",
                           json_schema_extra=VOLATILE)
    resume: str = Field("auto", description="'auto': continue from the newest intact checkpoint; 'never'; "
                                            "or a checkpoint folder.", json_schema_extra=VOLATILE)
    allow_config_change: bool = Field(
        False, description="Resume even if seed, schedule, data or base model changed (the diff is logged).",
        json_schema_extra=VOLATILE)


class NanGuardConfig(Section):
    """What a non-finite loss or gradient does."""

    nan_policy: Literal["skip", "stop"] = Field(
        "skip", description="Non-finite loss or gradient: 'skip' the step (weights unchanged, counted) or "
                            "'stop' (diagnostics saved, exit non-zero, last good checkpoint kept).")
    max_bad_steps: int = Field(5, ge=1, description="Abort after this many consecutive non-finite steps.")


class GuardConfig(NanGuardConfig):
    """Non-finite steps and loss spikes (the own training loop)."""

    spike_factor: float | None = Field(
        None, gt=1, description="A step whose loss exceeds this factor times the running average is a spike.")
    spike_policy: Literal["warn", "rollback"] = Field(
        "warn", description="On a spike: 'warn' (keep the update), or 'rollback' (restore the last checkpoint and "
                            "skip every batch since it, the spiking one included; needs checkpoint.save_every).")
    max_rollbacks: int = Field(3, ge=1, description="Spike rollbacks per run; later spikes only skip their batch.")


class LoggingConfig(Section):
    """What is printed and recorded during training; never changes the trained model."""

    volatile = True

    log_every: int = Field(5, ge=1, description="Steps between console lines.")
    eval_every: int | None = Field(
        None, ge=1, description="Steps between held-out loss evaluations per stream (also run at the end).")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Metric backends besides the always-on metrics.jsonl; wandb/mlflow are opt-in.")


def rollback_problems(guards: GuardConfig, checkpoint: CheckpointConfig) -> list[str]:
    if guards.spike_policy == "rollback" and not (guards.spike_factor and checkpoint.save_every):
        return ["guards.spike_policy: 'rollback' needs guards.spike_factor (what a spike is) and "
                "checkpoint.save_every (checkpoints to roll back to)"]
    return []


def rollback_decisive(guards: GuardConfig) -> set[str]:
    """Under spike rollback the checkpoint interval decides which batches a rollback skips."""
    return {"checkpoint.save_every"} if guards.spike_policy == "rollback" else set()


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


class TrainConfig(Section):
    """Continual pre-training on the packed mixture (switched on by the `mix` section)."""

    method: Literal["lora", "qlora", "full"] = Field("lora", description="qlora needs a CUDA GPU and bitsandbytes.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig, description="LoRA settings (lora, qlora).")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and learning-rate schedule.")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="Batch size and run length.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints and resume.")
    guards: GuardConfig = Field(default_factory=GuardConfig, description="Non-finite steps and loss spikes.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Console, held-out loss, trackers.")
    precision: Precision = Field("fp32", description=PRECISION_HELP)
    packed_attention: Literal["segments", "mask"] = Field(
        "segments", description="Attention over packed rows under `model.attn_implementation: sdpa`: `segments` "
                                "calls sdpa's causal kernel once per document (no cross-document scores "
                                "computed); `mask` passes transformers' 4D block-diagonal mask. Same losses either "
                                "way; flash_attention_2 uses its own varlen path.")
    activation_checkpointing: bool = Field(False, description=ACTIVATION_CHECKPOINTING_HELP)
    train_embeddings: bool = Field(
        False, description="Also train input embeddings and lm_head (needed when adding new tokens).")
    auto_eval: AutoEvalConfig | None = Field(
        None, description="Benchmark a fast task subset every N steps, logged with the training metrics; "
                          "optionally stop when the domain metric stops improving per unit of compute.")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        raise_problems(rollback_problems(self.guards, self.checkpoint))
        return self

    def decisive_volatile(self) -> set[str]:
        return rollback_decisive(self.guards)
