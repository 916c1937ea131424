"""`sft.method: auto`: a step-wise recipe that starts cheap and escalates only when needed.

QLoRA first (least memory), then LoRA, then full fine-tuning; each attempt is trained and
scored on the held-out set, and the first whose metric meets `sft.auto.target` is kept. Every
attempt, skipped ones included, is recorded with its result and reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LOWER_IS_BETTER = {"val_loss": True, "val_accuracy": False}


def meets(metric: str, value: float | None, target: float) -> bool:
    if value is None:
        return False
    return value <= target if LOWER_IS_BETTER[metric] else value >= target


def run_recipe(methods: list[str], train_attempt: Callable[[str], dict[str, Any]], metric: str, target: float,
               unavailable: Callable[[str], str | None]) -> tuple[str | None, list[dict[str, Any]]]:
    """Train `methods` in order until one meets the target. Returns (chosen method, attempts).

    `unavailable(method)` gives a reason to skip a method on this machine (e.g. qlora without a
    GPU). When no attempt meets the target, the best trained one is chosen (and says so).
    """
    attempts: list[dict[str, Any]] = []
    for method in methods:
        reason = unavailable(method)
        if reason:
            attempts.append({"method": method, "status": "skipped", "reason": reason})
            continue
        result = train_attempt(method)
        value = result.get(metric)
        ok = meets(metric, value, target)
        attempts.append({"method": method, "status": "met" if ok else "missed", metric: value, "target": target,
                         **{k: v for k, v in result.items() if k != metric}})
        if ok:
            return method, attempts
    trained = [a for a in attempts if a["status"] == "missed" and a.get(metric) is not None]
    if not trained:
        return None, attempts
    sign = 1 if LOWER_IS_BETTER[metric] else -1
    best = min(trained, key=lambda a: sign * a[metric])
    best["chosen_as_best_of_missed"] = True
    return best["method"], attempts
