"""Stage 3, "train": continual pre-training on the packed stream mixture."""

from domaintune.train.stage import inputs, run

__all__ = ["inputs", "run"]
