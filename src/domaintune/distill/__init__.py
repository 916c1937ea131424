"""Stage "distill": a smaller student trained from the run's tuned model (logit KD or sequence-level KD)."""

from domaintune.distill.stage import inputs, run

__all__ = ["inputs", "run"]
