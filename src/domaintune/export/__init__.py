"""Stage 6, "export": merged standalone model with its chat template."""

from domaintune.export.stage import inputs, run

__all__ = ["inputs", "run"]
