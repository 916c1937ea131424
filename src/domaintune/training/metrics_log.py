"""Training metrics as JSONL: one object per logged step (plots: training/plots.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only JSONL. On resume from step k, records after k (from the interrupted attempt)
    are dropped, so the log reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        self.records: list[dict[str, Any]] = []
        if resume_step and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            self.records = [r for r in map(json.loads, filter(None, lines)) if r.get("step", 0) <= resume_step]
        self._rewrite()

    def _rewrite(self) -> None:
        self._fh = self.path.open("w", encoding="utf-8")
        for rec in self.records:
            self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()

    def rewind(self, step: int) -> None:
        """Forget the records after `step` (a spike rollback undid those steps)."""
        self._fh.close()
        self.records = [r for r in self.records if r.get("step", 0) <= step]
        self._rewrite()

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()  # a crash must not lose the curve so far
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
