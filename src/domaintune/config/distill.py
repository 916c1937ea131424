"""`distill:` — train a smaller student from the run's tuned model (the teacher) on the mixture."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import ModelRef, Section


class StudentConfig(Section):
    init: Literal["prune_layers", "path"] = Field(
        "prune_layers", description="prune_layers: a copy of the teacher keeping `layers` of its layers "
                                    "(which ones: `prune`); path: the model at `path`.")
    layers: int | None = Field(None, ge=1, description="Layers the pruned student keeps (default: half).")
    prune: Literal["spread", "deep_block"] = Field(
        "deep_block", description="Which layers prune_layers keeps: deep_block = the first layers and the last "
                                  "one, dropping one contiguous block before the last (deep layers are the most "
                                  "redundant: Gromov et al. 2024; on the quickstart it trained ~2x better than "
                                  "spread under CE and KD, bench/README.md); spread = evenly spaced, first and "
                                  "last included.")
    path: ModelRef | None = Field(None, description="init: path — a model folder or hub id. logit_kd needs the "
                                                    "teacher's tokenizer; another one needs method: seq_kd.")

    @model_validator(mode="after")
    def _path_given(self) -> StudentConfig:
        if self.init == "path" and not self.path:
            raise ValueError("student.init: path needs student.path (a model folder or hub id)")
        if self.init == "prune_layers" and self.path:
            raise ValueError("student.path is only read with student.init: path")
        return self


class DistillConfig(Section):
    student: StudentConfig = Field(default_factory=StudentConfig, description="The student model.")
    method: Literal["logit_kd", "seq_kd"] = Field(
        "logit_kd", description="logit_kd: match the teacher's top-k next-token distribution on the mixture "
                                "(one cached teacher pass); seq_kd: train on the teacher's own continuations of "
                                "the mixture's rows (works across tokenizers).")
    top_k: int = Field(20, ge=1, le=1024, description="Teacher log-probabilities cached per token (logit_kd).")
    temperature: float = Field(1.0, gt=0, description="Softens both distributions (loss scaled by T²).")
    kd_weight: float = Field(0.9, ge=0, le=1, description="Loss = kd_weight·KL + (1 − kd_weight)·cross-entropy.")
    steps: int = Field(60, ge=1, description="Optimizer steps.")
    batch_rows: int = Field(4, ge=1, description="Packed rows per step.")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate (cosine schedule, 5% warm-up).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    seq_prompt_tokens: int = Field(32, ge=1, description="seq_kd: tokens of each row the teacher continues.")
    seq_new_tokens: int = Field(64, ge=1, description="seq_kd: tokens the teacher generates per row (greedy).")
