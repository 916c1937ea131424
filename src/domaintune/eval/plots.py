"""Plots for evaluation results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_perplexity(comparison: dict, out: Path, title: str) -> Path:
    """Grouped bars of base vs tuned perplexity per stream (log scale: streams differ by 10x+)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = list(comparison)
    xs = range(len(streams))
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(streams)), 3.8))
    width = 0.38
    if any("base" in comparison[s] for s in streams):
        ax.bar([x - width / 2 for x in xs], [comparison[s].get("base", {}).get("ppl", 0) for s in streams],
               width, label="base", color="#9aa5b1")
    ax.bar([x + width / 2 for x in xs], [comparison[s]["tuned"]["ppl"] for s in streams], width,
           label="tuned", color="#2f6fdf")
    for x, s in zip(xs, streams):
        if "ppl_change_pct" in comparison[s]:
            ax.annotate(f"{comparison[s]['ppl_change_pct']:+.1f}%", (x + width / 2, comparison[s]["tuned"]["ppl"]),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), streams)
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def radar_axes(streams: dict, tasks: dict, metric: str) -> list[tuple[str, float, float]]:
    """(label, base, tuned) per axis, each relative to the base model (base = 1.0, outside = better):
    tasks by score ratio, streams by inverse perplexity ratio."""
    from domaintune.eval.tasks import task_score

    axes = []
    for key, row in tasks.items():
        if "base" in row:
            b, t = task_score(row["base"], metric), task_score(row["tuned"], metric)
            axes.append((f"{key}\n{100 * b:.1f}→{100 * t:.1f}", 1.0, t / b if b else 1.0))
    for name, row in streams.items():
        if "base" in row:
            b, t = row["base"]["ppl"], row["tuned"]["ppl"]
            axes.append((f"{name} ppl\n{b:.1f}→{t:.1f}", 1.0, b / t))
    return axes


def plot_radar(axes: list[tuple[str, float, float]], out: Path, title: str) -> Path | None:
    """Base vs tuned on one polar chart; needs at least 3 axes to be a polygon."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(axes) < 3:
        return None
    angles = [2 * math.pi * i / len(axes) for i in range(len(axes))]
    closed = [*angles, angles[0]]
    fig, ax = plt.subplots(figsize=(6, 6), subplot_kw={"projection": "polar"})
    for idx, label, color in ((1, "base", "#9aa5b1"), (2, "tuned", "#2f6fdf")):
        values = [a[idx] for a in axes]
        ax.plot(closed, [*values, values[0]], color=color, linewidth=2, label=label)
        ax.fill(closed, [*values, values[0]], color=color, alpha=0.15)
    ax.set_xticks(angles, [a[0] for a in axes], fontsize=8)
    ax.set_ylim(0, max(1.2, max(a[2] for a in axes) * 1.1))
    ax.set_rlabel_position(180 / len(axes))  # radial numbers between the first two axes, not on a label
    ax.set_title(f"{title}\n(relative to base = 1.0; outside is better)", fontsize=10)
    ax.legend(loc="lower right", bbox_to_anchor=(1.15, -0.05))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
