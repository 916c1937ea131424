"""Confidence filtering of preference pairs by reward margin.

Each pair has K margin samples, reward(chosen) - reward(rejected): one per Monte-Carlo dropout
pass of one reward model, or one per member of an ensemble of reward models. A bootstrap over
those K samples gives a confidence interval of the pair's mean margin:

* interval above 0: the reward model confidently agrees with the label -> keep;
* interval contains 0: the pair is ambiguous (answers about as good) -> drop ("uncertain");
* interval below 0: confidently the other way, likely mislabeled -> drop ("reversed") unless
  `drop_reversed` is off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domaintune.artifacts import atomic_write_text

KEEP, UNCERTAIN, REVERSED = "keep", "uncertain", "reversed"


def margin_intervals(samples: torch.Tensor, level: float, n_boot: int = 1000, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile-bootstrap interval of each row's mean: samples [pairs, K] -> (low, high) [pairs]."""
    pairs, k = samples.shape
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(k, (n_boot, k), generator=gen)
    means = samples.float()[:, idx].mean(dim=-1)  # [pairs, n_boot]
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha])
    low, high = torch.quantile(means, q, dim=1)
    return low, high


@dataclass
class FilterResult:
    decisions: list[str]
    mean_margin: list[float]
    low: list[float]
    high: list[float]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> list[int]:
        return [i for i, d in enumerate(self.decisions) if d == KEEP]

    def accuracy_before_after(self) -> tuple[float, float]:
        """Share of pairs the scoring reward model agrees with: over all pairs, and over the kept ones."""
        def acc(idx):
            return sum(self.mean_margin[i] > 0 for i in idx) / len(idx) if idx else float("nan")

        return acc(range(len(self.decisions))), acc(self.kept)


def filter_pairs(samples: torch.Tensor, level: float, drop_reversed: bool = True, seed: int = 0,
                 tol: float = 1e-4) -> FilterResult:
    """Decide keep/uncertain/reversed for every pair from its margin samples [pairs, K]. Margins
    within `tol` of 0 count as 0: identical answers differ only by float noise (padding widths)."""
    low, high = margin_intervals(samples, level, seed=seed)
    decisions = []
    for lo, hi in zip(low.tolist(), high.tolist()):
        if lo > tol:
            decisions.append(KEEP)
        elif hi < -tol:
            decisions.append(REVERSED if drop_reversed else KEEP)
        else:
            decisions.append(UNCERTAIN)
    counts = {d: decisions.count(d) for d in (KEEP, UNCERTAIN, REVERSED)}
    return FilterResult(decisions, samples.float().mean(dim=1).tolist(), low.tolist(), high.tolist(), counts)


def write_filter_report(path: Path, pairs, report: FilterResult) -> Path:
    """One line per scored pair: where it came from, the decision and the margin interval."""
    lines = []
    for p, decision, mean, lo, hi in zip(pairs, report.decisions, report.mean_margin, report.low, report.high):
        question = next((m["content"] for m in reversed(p.prompt) if m["role"] == "user"), "")
        lines.append(json.dumps({"source": p.source, "line": p.line, "decision": decision,
                                 "margin": round(mean, 5), "interval": [round(lo, 5), round(hi, 5)],
                                 "prompt": question[:120]}, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path
