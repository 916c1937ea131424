"""Stage 2, "mix": streams at declared token ratios, packed into rows with document boundaries."""

from domaintune.mix.stage import inputs, run

__all__ = ["inputs", "run"]
