"""Per-key limits: token buckets with a fake clock, refunds of unused reservations, the daily quota,
concurrency; and 429 + Retry-After + /metrics counters on the real server."""

from __future__ import annotations

import httpx
import openai
import pytest
from access_helpers import bearer, governed

from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal
from domaintune.serve.security.limits import KeyLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _limiter(limits, clock):
    return KeyLimiter(lambda p: limits, clock=clock, wall=lambda: clock.now + 86400 * 20000)


def _refused(limiter, who, tokens=1) -> ApiError:
    with pytest.raises(ApiError) as err:
        limiter.acquire(who, tokens)
    assert err.value.status == 429
    return err.value


def test_requests_per_minute_refills_and_retry_after_says_when():
    clock, a, b = Clock(), Principal(id="a", key_id="a"), Principal(id="b", key_id="b")
    limiter = _limiter({"requests_per_minute": 2}, clock)
    limiter.acquire(a, 1)()
    limiter.acquire(a, 1)()
    assert _refused(limiter, a).headers["Retry-After"] == "30"  # one request refills every 30 s
    limiter.acquire(b, 1)()  # per key: b is not affected by a
    clock.now += 30
    limiter.acquire(a, 1)()


def test_tokens_per_minute_refunds_what_was_not_used():
    clock, a = Clock(), Principal(id="a", key_id="a")
    limiter = _limiter({"tokens_per_minute": 100}, clock)
    limiter.acquire(a, 80)(10)  # reserved 80, used 10: 90 left
    limiter.acquire(a, 80)(80)
    err = _refused(limiter, a, 80)
    assert "tokens_per_minute" in err.message and int(err.headers["Retry-After"]) >= 1
    with pytest.raises(ApiError) as too_big:
        limiter.acquire(a, 101)
    assert too_big.value.status == 400 and too_big.value.param == "max_tokens"


def test_daily_quota_resets_at_utc_midnight_and_concurrency_is_bounded():
    clock, a = Clock(), Principal(id="a", key_id="a")
    limiter = _limiter({"tokens_per_day": 50, "concurrent": 1}, clock)
    release = limiter.acquire(a, 30)
    assert "already has 1" in _refused(limiter, a).message
    release(30)
    release(30)  # a second call is ignored
    err = _refused(limiter, a, 30)
    assert 0 < int(err.headers["Retry-After"]) <= 86400
    clock.now += int(err.headers["Retry-After"])
    limiter.acquire(a, 30)(30)


def test_server_answers_429_with_retry_after_and_counts_it_in_metrics(start_server, loaded, tmp_path):
    server = start_server(loaded, max_tokens_cap=4, **governed(tmp_path, rules=None,
                                                               limits={"requests_per_minute": 100}))
    keys = server.app.state.keys
    _, token = keys.create("tight", "user", limits={"requests_per_minute": 2})
    _, admin = keys.create("ops", "admin")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert err.value.code == "rate_limit_exceeded"
    metrics = httpx.get(server.url + "/metrics", headers=bearer(admin)).text
    assert 'domaintune_rate_limited_total{limit="requests_per_minute"} 1.0' in metrics
    assert 'domaintune_rejections_total{reason="rate_limited"} 1.0' in metrics
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")  # well-formed, wrong secret
    httpx.get(server.url + "/metrics", headers=bearer(wrong))
    metrics = httpx.get(server.url + "/metrics", headers=bearer(admin)).text
    assert 'domaintune_auth_failures_total{reason="unknown"} 1.0' in metrics
