"""Training metrics: JSONL always (one object per logged step), plus a loss-curve plot."""

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


def plot_loss_curves(records: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Overall and per-stream training loss against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["train/loss"] for r in records], label="overall", linewidth=2, color="black")
    keys = sorted({k for r in records for k in r if k.startswith("train/loss/")})
    colors = {}
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if key in r]
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key.split("/")[-1], alpha=0.6)
        colors[key.split("/")[-1]] = line.get_color()
    for key in sorted({k for r in records for k in r if k.startswith("val/loss/")}):
        stream = key.split("/")[-1]
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o--", color=colors.get(stream),
                label=f"{stream} (held-out)", linewidth=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
