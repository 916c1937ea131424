"""Stage "sft": supervised fine-tuning on conversations (lora / full / prefix / qlora / auto)."""

from domaintune.sft.stage import inputs, run

__all__ = ["inputs", "run"]
