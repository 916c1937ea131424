"""Per-key limits: requests and tokens per minute (token buckets), tokens per UTC day, concurrency.

A request reserves prompt + max_tokens x n tokens when admitted; release(used) refunds what it did
not use, so quotas count real usage while a burst cannot overrun them. Breaches are 429 with a
Retry-After computed from the bucket (seconds until enough refills), counted in /metrics by limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from domaintune.serve.errors import ApiError, invalid
from domaintune.serve.hooks import Principal

DAY = 86400.0


@dataclass
class _Bucket:
    capacity: float
    per_s: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.per_s)
        self.at = now

    def wait(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.per_s)


@dataclass
class _KeyState:
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    day: int = -1
    day_used: int = 0
    running: int = 0


class KeyLimiter:
    """hooks.Limiter. `limits_of(principal)` gives the key's limits (its own over the config's defaults)."""

    def __init__(self, limits_of: Callable[[Principal], dict], metrics=None, clock=time.monotonic,
                 wall=time.time):
        self.limits_of, self.metrics, self.clock, self.wall = limits_of, metrics, clock, wall
        self._state: dict[str, _KeyState] = {}
        self._lock = threading.Lock()

    def _refuse(self, limit: str, retry_s: float, message: str) -> ApiError:
        if self.metrics is not None:
            self.metrics.rate_limited.labels(limit).inc()
        return ApiError(429, message, code="rate_limit_exceeded",
                        headers={"Retry-After": str(max(1, math.ceil(retry_s)))})

    def _bucket(self, state: _KeyState, name: str, per_minute: int, now: float) -> _Bucket:
        b = state.buckets.get(name)
        if b is None or b.capacity != per_minute:  # new key, or its limit changed
            b = state.buckets[name] = _Bucket(per_minute, per_minute / 60.0, per_minute, now)
        b.refill(now)
        return b

    def acquire(self, principal: Principal, tokens: int) -> Callable[..., None]:
        lim = self.limits_of(principal)
        who = principal.key_id or principal.id
        with self._lock:
            state = self._state.setdefault(who, _KeyState())
            now, wall = self.clock(), self.wall()
            self._check(state, lim, tokens, now, wall)
            for name, amount in (("requests_per_minute", 1), ("tokens_per_minute", tokens)):
                if lim.get(name):
                    state.buckets[name].level -= amount
            state.day_used += tokens
            state.running += 1
        released = []

        def release(used: int | None = None) -> None:
            if released:
                return
            released.append(True)
            unused = tokens if used is None else max(0, tokens - used)
            with self._lock:
                state.running -= 1
                state.day_used -= unused
                if "tokens_per_minute" in state.buckets and lim.get("tokens_per_minute"):
                    b = state.buckets["tokens_per_minute"]
                    b.level = min(b.capacity, b.level + unused)
        return release

    def _check(self, state: _KeyState, lim: dict, tokens: int, now: float, wall: float) -> None:
        if lim.get("concurrent") and state.running >= lim["concurrent"]:
            raise self._refuse("concurrent", 1, f"this key already has {state.running} requests running "
                                                f"(limit {lim['concurrent']})")
        for name, amount in (("requests_per_minute", 1), ("tokens_per_minute", tokens)):
            if not lim.get(name):
                continue
            if amount > lim[name]:
                raise invalid(f"this request reserves {amount} tokens (prompt + max_tokens x n), more than the "
                              f"key's {name} ({lim[name]}): lower max_tokens", "max_tokens")
            b = self._bucket(state, name, lim[name], now)
            if b.level < amount:
                raise self._refuse(name, b.wait(amount), f"{name} limit of {lim[name]} reached for this key")
        day = int(wall // DAY)
        if state.day != day:
            state.day, state.day_used = day, 0
        cap = lim.get("tokens_per_day")
        if cap and state.day_used + tokens > cap:
            raise self._refuse("tokens_per_day", (day + 1) * DAY - wall,
                               f"tokens_per_day quota of {cap} used up for this key (resets at 00:00 UTC)")
