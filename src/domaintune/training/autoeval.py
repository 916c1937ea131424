"""Checkpoint auto-eval: score a fast benchmark subset every N steps during training, log it with
the training metrics, and stop when the domain metric no longer pays for the compute.

Stopping rule: over the last K evaluations (`patience`), the domain score must rise by at least
`min_gain_per_mtokens` accuracy points per million trained tokens; otherwise training ends at that
step (the final model is saved as usual) and the reason is recorded. Tokens are the unit of
compute: they are what a step costs on any hardware.
"""

from __future__ import annotations

from typing import Any

from domaintune.benchmarks import load_task, score_task
from domaintune.config import AutoEvalConfig
from domaintune.console import console

GEN_METRIC = "exact_match"


def plateau_reason(history: list[tuple[int, int, float]], patience: int, min_gain_per_mtokens: float | None,
                   metric: str, section: str = "train") -> str | None:
    """Why to stop, or None. `history` holds (step, tokens trained so far, domain score in [0, 1])."""
    if min_gain_per_mtokens is None or len(history) < patience:
        return None
    (step0, tokens0, score0), (step1, tokens1, score1) = history[-patience], history[-1]
    mtokens = (tokens1 - tokens0) / 1e6
    if mtokens <= 0:
        return None
    gain = 100 * (score1 - score0)
    rate = gain / mtokens
    if rate >= min_gain_per_mtokens:
        return None
    return (f"auto-eval plateau: domain {metric} went {100 * score0:.1f} -> {100 * score1:.1f} "
            f"({gain:+.2f} points) over the last {patience} evaluations (steps {step0}-{step1}, "
            f"{mtokens:.4f}M tokens) = {rate:.1f} points per M tokens, below "
            f"{section}.auto_eval.min_gain_per_mtokens={min_gain_per_mtokens:g}")


class AutoEval:
    """Called with every step's metrics record; evaluates when due and returns metrics to merge in."""

    def __init__(self, cfg: AutoEvalConfig, tokenizer, total_steps: int, section: str = "train"):
        self.cfg, self.tokenizer, self.total_steps = cfg, tokenizer, total_steps
        self.section = section  # the config section in use, named in the stop reason
        self.tasks = [(e, load_task(e.task, data=e.data, fewshot_data=e.fewshot_data, subjects=e.subjects,
                                    limit=e.limit or cfg.limit, shots=e.shots)) for e in cfg.tasks]
        self.tokens = 0
        self.history: list[tuple[int, int, float]] = []
        self.stop_reason: str | None = None

    def _score(self, model) -> tuple[dict[str, float], float]:
        metrics, domain = {}, []
        groups = {e.group for e, _ in self.tasks}
        for entry, task in self.tasks:
            result = score_task(model, self.tokenizer, task, self.cfg.batch_size)
            for name, value in result.metrics.items():
                metrics[f"autoeval/{task.name}/{name}"] = value
            if entry.group == "domain" or "domain" not in groups:
                domain.append(result.metrics.get(self.cfg.metric, result.metrics.get(GEN_METRIC, 0.0)))
        return metrics, sum(domain) / len(domain)

    def __call__(self, model, rec: dict[str, Any]) -> dict[str, Any]:
        self.tokens += int(rec.get("tokens", 0))
        step = rec["step"]
        if step % self.cfg.every and step != self.total_steps:
            return {}
        metrics, domain = self._score(model)
        self.history.append((step, self.tokens, domain))
        out = {**metrics, "autoeval/domain_score": domain}
        shown = "  ".join(f"{k.removeprefix('autoeval/')}={100 * v:.1f}" for k, v in metrics.items())
        console.print(f"  step {step:>4}  [magenta]auto-eval[/] {shown}")
        reason = plateau_reason(self.history, self.cfg.patience, self.cfg.min_gain_per_mtokens, self.cfg.metric,
                                self.section)
        if reason and step != self.total_steps:
            self.stop_reason = reason
            out["stop_reason"] = reason
            console.print(f"  [yellow]stopping early:[/] {reason}")
        return out
