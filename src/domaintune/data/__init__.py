"""Stage 1, data: turn raw sources into clean, deduplicated, split document streams.

The runner calls `inputs(cfg)` (files to fingerprint) and `run(cfg, run_dir)`; see `stage.py`.
"""

from domaintune.data.stage import inputs, run

__all__ = ["inputs", "run"]
