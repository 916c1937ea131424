"""The `align` section: reward model, confidence filter, DPO. Its checkpoint and guard settings
are its own (not `train`'s), so editing CPT settings never re-runs alignment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import FilePath, Section
from domaintune.config.training import (
    ACTIVATION_CHECKPOINTING_HELP,
    AdapterConfig,
    CheckpointConfig,
    NanGuardConfig,
    Precision,
)


class PreferenceDataConfig(Section):
    general: list[FilePath] = Field(
        default_factory=list, description="JSONL files of general preference pairs (reward model stage 1).")
    domain: list[FilePath] = Field(
        min_length=1, description="JSONL files of domain preference pairs (reward model stage 2, filter, DPO).")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="Share of pairs held out for accuracy/margin.")
    max_reject_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail if more than this share of rows is malformed (quarantined).")


class RewardModelConfig(Section):
    enabled: bool = Field(True, description="Train a reward model (needed by the confidence filter).")
    two_stage: bool = Field(True, description="First on data.general, then continue on data.domain.")
    epochs: int = Field(1, ge=1, description="Passes over the pairs of each reward stage.")
    max_steps: int | None = Field(None, ge=1, description="Steps per reward stage; overrides epochs.")
    lr: float = Field(1e-4, gt=0, description="Reward model learning rate.")
    batch_size: int = Field(4, ge=1, description="Pairs per step.")


class ConfidenceFilterConfig(Section):
    enabled: bool = Field(True, description="Drop domain pairs whose reward-margin interval contains 0.")
    method: Literal["mc_dropout", "ensemble"] = Field(
        "mc_dropout", description="Margin samples from dropout-on scoring passes, or from K reward models "
                                  "trained with different seeds on bootstrap resamples.")
    samples: int = Field(8, ge=2, description="Dropout passes, or ensemble members.")
    dropout: float = Field(0.1, gt=0, lt=1, description="mc_dropout: dropout rate during the scoring passes.")
    level: float = Field(0.9, gt=0, lt=1, description="Confidence level of the bootstrap interval.")
    drop_reversed: bool = Field(
        True, description="Also drop pairs the reward model confidently prefers the other way (likely mislabeled).")


class DPOSection(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    sft_weight: float = Field(
        0.0, ge=0, description="Weight of an SFT loss on the chosen answers mixed in (limits drift); 0: pure DPO.")
    epochs: int = Field(1, ge=1, description="Passes over the kept domain pairs.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    lr: float = Field(5e-5, gt=0, description="DPO learning rate.")
    batch_size: int = Field(2, ge=1, description="Pairs per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_len: int = Field(512, ge=16, description="Prompt + answer tokens (longer pairs are truncated).")
    eval_every: int | None = Field(None, ge=1, description="Steps between held-out evaluations (also at the end).")


class AlignConfig(Section):
    """Preference alignment (switched on by this section)."""

    data: PreferenceDataConfig = Field(description="Preference pair files.")
    method: Literal["lora", "qlora", "full"] = Field("lora", description="qlora needs a CUDA GPU and bitsandbytes.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig, description="LoRA settings (lora, qlora).")
    reward: RewardModelConfig = Field(default_factory=RewardModelConfig, description="The reward model.")
    filter: ConfidenceFilterConfig = Field(default_factory=ConfidenceFilterConfig,
                                           description="Drop domain pairs the reward model is unsure about.")
    dpo: DPOSection = Field(default_factory=DPOSection, description="Direct preference optimization.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig,
                                         description="Checkpoints and resume of every align phase.")
    guards: NanGuardConfig = Field(default_factory=NanGuardConfig, description="Non-finite steps.")
    precision: Precision = Field(
        "fp32", description="Mixed precision of the reward-model and DPO trainers; fp16 needs a CUDA GPU.")
    activation_checkpointing: bool = Field(False, description=ACTIVATION_CHECKPOINTING_HELP)

    @model_validator(mode="after")
    def _filter_needs_reward(self) -> AlignConfig:
        if self.filter.enabled and not self.reward.enabled:
            raise ValueError("filter.enabled needs reward.enabled (pairs are scored by the reward model)")
        return self
