"""Stage "align": reward model, confidence filter and DPO on preference pairs."""

from domaintune.align.stage import inputs, run

__all__ = ["inputs", "run"]
