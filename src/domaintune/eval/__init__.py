"""Stage 5, "eval": held-out perplexity per stream, base vs tuned."""

from domaintune.eval.stage import inputs, run

__all__ = ["inputs", "run"]
