"""The `eval` section (perplexity per stream, benchmark tasks, the forgetting gate) and the
benchmark task entry that `eval.tasks` and the training sections' `auto_eval` share."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import Count, FilePath, Section, TaskRef


class EvalTaskConfig(Section):
    task: TaskRef = Field(description="Built-in task name (mmlu, ceval, cmmlu, gsm8k, financeiq) or a task YAML path.")
    data: FilePath | None = Field(None, description="Your local copy of the task's data (file or folder); "
                                               "default: the task YAML's own path. Nothing is downloaded.")
    fewshot_data: FilePath | None = Field(None, description="Few-shot source (e.g. the dev split); default: the "
                                                       "task's own items.")
    subjects: list[str] | None = Field(None, description="Subjects to keep (e.g. MMLU's econometrics).")
    limit: int | None = Field(None, ge=1, description="Items at most, taken round-robin across subjects.")
    shots: int | None = Field(None, ge=0, description="Few-shot examples; default: the task's own setting.")
    group: Literal["general", "domain"] = Field(
        "general", description="'general' tasks guard against forgetting; 'domain' tasks must improve.")


class GateConfig(Section):
    enabled: bool = Field(True, description="Fail the eval stage (exit code 3, export does not run) on a breach.")
    domain_streams: list[str] = Field(default_factory=lambda: ["domain"],
                                      description="Streams that must improve; every other stream is general.")
    max_general_ppl_rise_pct: float | None = Field(
        5.0, description="A general stream's perplexity may rise at most this much (percent) vs the base model.")
    max_general_task_drop: float | None = Field(
        1.0, description="A general task's score may drop at most this many points (accuracy x 100).")
    min_domain_ppl_drop_pct: float | None = Field(
        None, description="Each domain stream's perplexity must fall at least this much (percent).")
    min_domain_task_gain: float | None = Field(
        None, description="Each domain task's score must rise at least this many points.")
    metric: Literal["acc", "acc_norm"] = Field("acc", description="Multiple-choice metric the gate reads "
                                                                  "(generation tasks use exact_match).")


class EvalConfig(Section):
    split: Literal["val", "test"] = Field("test", description="The data split scored for perplexity.")
    streams: list[str] | None = Field(None, description="Streams to score; default: all data streams.")
    max_docs: int | None = Field(200, ge=1, description="Documents per stream (deterministic subset).")
    max_tokens: Count | None = Field(
        None, description="Token budget per stream: whole documents are added until it is reached.")
    window: int = Field(1024, ge=16, description="Tokens per scoring window.")
    stride: int = Field(512, ge=1, description="Window step for documents longer than `window`.")
    batch_size: int = Field(4, ge=1, description="Windows per forward pass when scoring perplexity.")
    compare_base: bool = Field(True, description="Also score the base model (cached by fingerprint).")
    tasks: list[EvalTaskConfig] = Field(default_factory=list, description="Benchmark tasks, base vs tuned.")
    task_batch_size: int = Field(8, ge=1, description="Requests per forward pass when scoring tasks.")
    gate: GateConfig = Field(default_factory=GateConfig, description="The forgetting gate: base vs tuned.")
    report: bool = Field(True, description="Write eval_report.html + eval_report.json.")

    @model_validator(mode="after")
    def _stride_fits_window(self) -> EvalConfig:
        if self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must be <= window ({self.window})")
        return self
