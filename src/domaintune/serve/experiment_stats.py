"""Statistics of the A/B report: percentiles, Wilson score intervals for a rate, Newcombe's interval
for the difference of two rates, and the verdict it implies.

Wilson (not the normal approximation) because feedback rates sit near 0 or 1 and arms are often
small; Newcombe's hybrid score interval (method 10 of Newcombe 1998) because it is built from the
two Wilson intervals and stays inside [-1, 1]. A verdict is 'better' or 'worse' only when the whole
95 % interval of (arm - control) lies above or below zero; otherwise 'inconclusive'.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(s1: int, n1: int, s0: int, n0: int) -> tuple[float, float] | None:
    """95 % interval of rate1 - rate0 (Newcombe's hybrid score method)."""
    a, b = wilson(s1, n1), wilson(s0, n0)
    if a is None or b is None:
        return None
    p1, p0 = s1 / n1, s0 / n0
    diff = p1 - p0
    lower = diff - math.sqrt((p1 - a[0]) ** 2 + (b[1] - p0) ** 2)
    upper = diff + math.sqrt((a[1] - p1) ** 2 + (p0 - b[0]) ** 2)
    return lower, upper


def verdict(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "inconclusive"
    if interval[0] > 0:
        return "better"
    if interval[1] < 0:
        return "worse"
    return "inconclusive"


def rate_summary(successes: int, n: int) -> dict:
    interval = wilson(successes, n)
    return {"n": n, "successes": successes, "rate": successes / n if n else None,
            "interval": list(interval) if interval else None}


def compare(arm: dict, control: dict) -> dict:
    """Verdict of one arm's rate against the control's (both from rate_summary)."""
    diff = difference_interval(arm["successes"], arm["n"], control["successes"], control["n"])
    return {"difference_interval": list(diff) if diff else None, "verdict": verdict(diff)}
