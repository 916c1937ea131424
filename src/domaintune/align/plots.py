"""Plots of the align stage: DPO reward margin over steps, and the confidence filter's decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domaintune.align.confidence import FilterResult

COLORS = {"keep": "#2f6fdf", "uncertain": "#9aa5b1", "reversed": "#d64545"}


def plot_alignment(records: list[dict[str, Any]], report: FilterResult | None, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if report is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    for key, style, label in (("rewards/margins", "-", "train (per step)"),
                              ("eval_rewards/margins", "o--", "held-out")):
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("DPO step")
    ax.set_ylabel("reward margin (chosen - rejected)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if report is not None:
        ax = axes[0][1]
        order = sorted(range(len(report.decisions)), key=lambda i: report.mean_margin[i])
        for x, i in enumerate(order):
            color = COLORS[report.decisions[i]]
            ax.plot([x, x], [report.low[i], report.high[i]], color=color, linewidth=2)
            ax.plot(x, report.mean_margin[i], "o", color=color, markersize=3)
        ax.axhline(0, color="black", linewidth=0.6)
        for name, color in COLORS.items():
            ax.plot([], [], color=color, linewidth=3, label=f"{name} ({report.counts.get(name, 0)})")
        ax.set_xlabel("domain pair (sorted by margin)")
        ax.set_ylabel("reward-model margin interval")
        ax.set_title("confidence filter")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
