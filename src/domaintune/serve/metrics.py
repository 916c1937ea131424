"""Prometheus metrics with fixed label sets: routes, status codes and reasons, never user text or ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Latency buckets (seconds) for a CPU box: a decode step is tens of ms, a long answer tens of seconds.
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5, 5.0)
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
REJECTION_REASONS = ("bad_request", "too_large", "not_found", "unauthorized", "forbidden", "rate_limited",
                     "overloaded", "engine_error")


class _EngineGauges:
    """Running and waiting sequences, read from the engine at scrape time."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        stats = self.engine.stats()
        running = GaugeMetricFamily("domaintune_num_requests_running", "Sequences in the decode batch or prefill.")
        running.add_metric([], stats.running)
        waiting = GaugeMetricFamily("domaintune_num_requests_waiting", "Requests queued for a slot.")
        waiting.add_metric([], stats.waiting)
        yield running
        yield waiting
        hits = CounterMetricFamily("domaintune_prefix_cache_hit_tokens", "Prompt tokens whose KV came from the "
                                   "prefix cache (the rest were prefilled).")
        hits.add_metric([], stats.prefix_hit_tokens)
        looked = CounterMetricFamily("domaintune_prefix_cache_lookup_tokens", "Prompt tokens looked up in the "
                                     "prefix cache.")
        looked.add_metric([], stats.prefix_lookup_tokens)
        yield hits
        yield looked


class Metrics:
    def __init__(self, engine):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("domaintune_requests", "Finished HTTP requests.", ["route", "status"], registry=r)
        self.rejections = Counter("domaintune_rejections", "Requests refused, by reason.", ["reason"], registry=r)
        self.prompt_tokens = Counter("domaintune_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("domaintune_generation_tokens", "Tokens generated.", registry=r)
        self.ttft = Histogram("domaintune_time_to_first_token_seconds", "Request received to first token.",
                              buckets=REQUEST_BUCKETS, registry=r)
        self.itl = Histogram("domaintune_inter_token_latency_seconds", "Time per output token after the first.",
                             buckets=TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram("domaintune_e2e_request_latency_seconds", "Request received to last token.",
                             buckets=REQUEST_BUCKETS, registry=r)
        self.auth_failures = Counter("domaintune_auth_failures", "API keys refused, by reason.", ["reason"],
                                     registry=r)
        self.rate_limited = Counter("domaintune_rate_limited", "Requests refused by a per-key limit.", ["limit"],
                                    registry=r)
        for reason in ("missing", "malformed", "unknown", "revoked", "expired"):
            self.auth_failures.labels(reason)
        for limit in ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "concurrent"):
            self.rate_limited.labels(limit)
        for reason in REJECTION_REASONS:  # export zeros so dashboards see every series from the start
            self.rejections.labels(reason)
        r.register(_EngineGauges(engine))

    def reject(self, status: int) -> None:
        reason = {400: "bad_request", 413: "too_large", 404: "not_found", 401: "unauthorized", 403: "forbidden",
                  429: "rate_limited", 503: "overloaded"}.get(status, "engine_error")
        self.rejections.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Timing:
    """TTFT and per-token gaps of one sequence, observed as its events arrive."""

    def __init__(self, metrics: Metrics, started: float):
        self.metrics, self.started, self.last, self.tokens = metrics, started, None, 0

    def observe(self, now: float, completion_tokens: int) -> None:
        new = completion_tokens - self.tokens
        if new <= 0:
            return
        if self.last is None:
            self.metrics.ttft.observe(now - self.started)
            new -= 1  # the first token's latency is TTFT, not an inter-token gap
        elif new:
            gap = (now - self.last) / new
            for _ in range(new):
                self.metrics.itl.observe(gap)
        self.last, self.tokens = now, completion_tokens
