"""The `sft` section: supervised fine-tuning on conversations. It composes the shared training
blocks; a key SFT does not implement does not exist here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from domaintune.config.base import FilePath, Section, TemplateRef
from domaintune.config.runtime import SuperviseConfig
from domaintune.config.training import (
    ACTIVATION_CHECKPOINTING_HELP,
    PRECISION_HELP,
    AdapterConfig,
    AutoEvalConfig,
    BatchConfig,
    CheckpointConfig,
    GuardConfig,
    LoggingConfig,
    OptimConfig,
    Precision,
    raise_problems,
    rollback_decisive,
    rollback_problems,
)


class SFTDataConfig(Section):
    path: FilePath = Field(description="A JSONL file (or JSON list) of conversations.")
    format: Literal["auto", "alpaca", "sharegpt", "openai"] = Field(
        "auto", description="auto: per row, from its fields (instruction / conversations / messages).")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                             description="Name for per-source losses; defaults to the file name.")


class PrefixConfig(Section):
    num_virtual_tokens: int = Field(16, ge=1, description="Trainable prefix length (peft PrefixTuningConfig).")


class SFTAutoConfig(Section):
    metric: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss", description="Held-out metric on assistant tokens that decides whether an attempt is enough.")
    target: float = Field(description="val_loss at most / val_accuracy at least this value.")
    methods: list[Literal["qlora", "lora", "full"]] = Field(
        default_factory=lambda: ["qlora", "lora", "full"],
        description="Attempts in order; qlora is skipped (and recorded) without a CUDA GPU.")


class SFTBatchConfig(BatchConfig):
    epochs: int = Field(3, ge=1, description="Passes over the SFT data (ignored if max_steps is set).")


class SFTConfig(Section):
    """Supervised fine-tuning on conversations."""

    method: Literal["lora", "qlora", "full", "prefix", "auto"] = Field(
        "lora", description="qlora needs a CUDA GPU; prefix = peft prefix tuning; auto = qlora -> lora -> full "
                            "until sft.auto.target is met.")
    data: list[SFTDataConfig] = Field(default_factory=list, description="Conversation files (Alpaca, ShareGPT, "
                                      "OpenAI); the synth stage's pairs are added when a synth section is set.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each file held out for loss/accuracy.")
    template: TemplateRef | None = Field(
        None, description="Chat template: null = the tokenizer's own; a shipped name (chatml, llama3, qwen, "
                          "alpaca); or a .jinja file. Saved with the model.")
    max_len: int = Field(1024, ge=16, description="Longest tokenized conversation (and packed row).")
    truncation: Literal["drop", "history", "answer"] = Field(
        "drop", description="Longer conversations: drop (quarantined), history (drop oldest exchanges), "
                            "answer (cut the final answer; counted and reported).")
    packing: bool | None = Field(
        None, description="Exact packing (no cross-example attention); null = on, except for prefix tuning.")
    prefix: PrefixConfig = Field(default_factory=PrefixConfig, description="Prefix tuning (method: prefix).")
    auto: SFTAutoConfig | None = Field(None, description="Target for method: auto.")
    max_invalid_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail if more than this share of rows is quarantined.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig, description="LoRA settings (lora, qlora).")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and learning-rate schedule.")
    batch: SFTBatchConfig = Field(default_factory=SFTBatchConfig, description="Batch size and run length.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints and resume.")
    guards: GuardConfig = Field(default_factory=GuardConfig, description="Non-finite steps and loss spikes.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Console, held-out loss, trackers.")
    precision: Precision = Field("fp32", description=PRECISION_HELP)
    activation_checkpointing: bool = Field(False, description=ACTIVATION_CHECKPOINTING_HELP)
    train_embeddings: bool = Field(
        False, description="Also train input embeddings and lm_head (needed when adding new tokens).")
    auto_eval: AutoEvalConfig | None = Field(
        None, description="Benchmark a fast task subset every N steps, logged with the training metrics.")

    @model_validator(mode="before")
    @classmethod
    def _supervisor_is_global(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            raise_problems([f"{k}: supervisor settings are global; set runtime.supervise.{k}"
                            for k in SuperviseConfig.model_fields if k in raw])
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> SFTConfig:
        problems = rollback_problems(self.guards, self.checkpoint)
        if self.method == "prefix" and self.packing:
            problems.append("packing: prefix tuning cannot use exact packing (the prefix would be shared by every "
                            "packed example); set packing: false")
        if self.method == "prefix" and self.activation_checkpointing:
            problems.append("activation_checkpointing: not available with prefix tuning (its prefixes travel as "
                            "past key values); use lora or full")
        if self.method == "auto" and self.auto is None:
            problems.append("method 'auto' needs auto.target (e.g. auto: {metric: val_loss, target: 1.5})")
        if self.method == "auto" and not self.val_fraction:
            problems.append("method 'auto' scores each attempt on held-out rows; set val_fraction > 0")
        raise_problems(problems)
        return self

    def decisive_volatile(self) -> set[str]:
        return rollback_decisive(self.guards)

    @property
    def packed(self) -> bool:
        return self.method != "prefix" if self.packing is None else self.packing
