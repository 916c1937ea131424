"""Plots of training runs: loss curves (own loop and HF-trainer phases) and align's reward margin.

Drawn with matplotlib's object-oriented API on a `Figure` of its own (no pyplot, no global
backend switch), so plotting from a stage never changes the caller's matplotlib state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

FILTER_COLORS = {"keep": "#2f6fdf", "uncertain": "#9aa5b1", "reversed": "#d64545"}


def _figure(panels: int = 1, width: float = 7, height: float = 4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height))
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def _points(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_loss_curves(records: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Overall and per-stream training loss against step, with held-out losses per stream."""
    if not records:
        return None
    fig, (ax,) = _figure()
    ax.plot(*_points(records, "train/loss"), label="overall", linewidth=2, color="black")
    colors = {}
    for key in sorted({k for r in records for k in r if k.startswith("train/loss/")}):
        line, = ax.plot(*_points(records, key), label=key.split("/")[-1], alpha=0.6)
        colors[key.split("/")[-1]] = line.get_color()
    for key in sorted({k for r in records for k in r if k.startswith("val/loss/")}):
        stream = key.split("/")[-1]
        ax.plot(*_points(records, key), "o--", color=colors.get(stream), label=f"{stream} (held-out)", linewidth=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def plot_phase_losses(phases: Sequence[tuple[str, list[dict[str, Any]]]], out: Path, title: str) -> Path | None:
    """Training (and held-out) loss of each HF-trainer phase, one panel per phase (e.g. reward model, DPO)."""
    phases = [(name, records) for name, records in phases if any("loss" in r for r in records)]
    if not phases:
        return None
    fig, axes = _figure(len(phases), width=5, height=3.8)
    for ax, (name, records) in zip(axes, phases):
        ax.plot(*_points(records, "loss"), label="train")
        if any("eval_loss" in r for r in records):
            ax.plot(*_points(records, "eval_loss"), "o--", label="held-out")
        ax.set_xlabel(f"{name} step")
        ax.set_ylabel("loss")
        ax.set_title(f"{title} — {name}")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out)


def plot_alignment(records: list[dict[str, Any]], report, out: Path, title: str) -> Path:
    """DPO reward margin over steps and, with a confidence-filter `report`, its decisions per pair."""
    fig, axes = _figure(2 if report is not None else 1, width=6, height=3.8)
    ax = axes[0]
    for key, style, label in (("rewards/margins", "-", "train (per step)"),
                              ("eval_rewards/margins", "o--", "held-out")):
        steps, values = _points(records, key)
        if steps:
            ax.plot(steps, values, style, label=label)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("DPO step")
    ax.set_ylabel("reward margin (chosen - rejected)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if report is not None:
        _filter_panel(axes[1], report)
    return _save(fig, out)


def _filter_panel(ax, report) -> None:
    order = sorted(range(len(report.decisions)), key=lambda i: report.mean_margin[i])
    for x, i in enumerate(order):
        color = FILTER_COLORS[report.decisions[i]]
        ax.plot([x, x], [report.low[i], report.high[i]], color=color, linewidth=2)
        ax.plot(x, report.mean_margin[i], "o", color=color, markersize=3)
    ax.axhline(0, color="black", linewidth=0.6)
    for name, color in FILTER_COLORS.items():
        ax.plot([], [], color=color, linewidth=3, label=f"{name} ({report.counts.get(name, 0)})")
    ax.set_xlabel("domain pair (sorted by margin)")
    ax.set_ylabel("reward-model margin interval")
    ax.set_title("confidence filter")
    ax.legend()
