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
