"""Conformance: a real uvicorn server on 127.0.0.1 driven by the official openai client (max_retries=0)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import torch
from serve_helpers import wait_for

MESSAGES = [{"role": "user", "content": "What is the wire transfer fee?"}]


@pytest.fixture(scope="module")
def shared(request, tmp_path_factory):
    """One server for the read-only conformance tests of this module (starting one costs seconds)."""
    from serve_helpers import ThreadServer, build_varied_model_dir

    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.loading import load_for_serving
    from domaintune.serve.render import ChatRenderer

    model, tokenizer = load_for_serving(build_varied_model_dir(tmp_path_factory.mktemp("api-model")))
    settings = ServeConfig(port=0, max_tokens_cap=64, max_prompt_tokens=200, max_body_bytes=4096)
    engine = HFEngine(model, tokenizer, "tiny", SchedulerLimits(max_running=4, threads=1))
    server = ThreadServer(create_app(engine, ChatRenderer(tokenizer), settings), settings)
    server.tokenizer = tokenizer
    yield server
    server.stop()


def _prompt_tokens(tokenizer, messages) -> int:
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])


def test_models_lists_the_served_model(shared):
    models = shared.client().models.list()
    assert [m.id for m in models.data] == ["tiny"] and models.data[0].object == "model"


def test_chat_non_stream_has_exact_usage_and_length_finish(shared):
    reply = shared.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.finish_reason in ("length", "stop")
    assert reply.usage.prompt_tokens == _prompt_tokens(shared.tokenizer, MESSAGES)
    if choice.finish_reason == "length":
        assert reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_greedy_chat_is_deterministic_and_max_completion_tokens_is_honoured(shared):
    client = shared.client()
    a = client.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=10, temperature=0)
    b = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.completion_tokens <= 10


def test_chat_stream_chunks_usage_chunk_and_done(shared):
    stream = shared.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0,
                                                      stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and all(c.model == "tiny" for c in chunks)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    finishes = [c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason]
    assert len(finishes) == 1
    plain = shared.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_raw_sse_ends_with_done_and_has_event_stream_headers(shared):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", shared.url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in lines[:-1])


def test_stop_string_and_n_choices(shared):
    client = shared.client()
    full = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    stop = text[4:7]
    if not stop.strip() or text.find(stop) != 4:
        pytest.skip("the random model's reply has no usable stop string at offset 4")
    stopped = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0,
                                             stop=[stop])
    assert stopped.choices[0].message.content == text[:4] and stopped.choices[0].finish_reason == "stop"
    several = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, n=3, temperature=1.0,
                                             seed=7)
    assert [c.index for c in several.choices] == [0, 1, 2]
    again = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, n=3, temperature=1.0,
                                           seed=7)
    assert [c.message.content for c in several.choices] == [c.message.content for c in again.choices]
    assert 3 <= several.usage.completion_tokens <= 18  # 1 to 6 tokens for each of the 3 choices


def test_completions_non_stream_and_stream(shared):
    client = shared.client()
    done = client.completions.create(model="tiny", prompt="The bank charges", max_tokens=5, temperature=0)
    assert done.object == "text_completion" and done.choices[0].finish_reason in ("length", "stop")
    assert done.usage.prompt_tokens == len(shared.tokenizer("The bank charges").input_ids)
    pieces = list(client.completions.create(model="tiny", prompt="The bank charges", max_tokens=5, temperature=0,
                                            stream=True))
    assert "".join(p.choices[0].text for p in pieces) == done.choices[0].text


@pytest.mark.parametrize("kwargs, param", [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 65}, "max_tokens"),          # over serve.max_tokens_cap
    ({"n": 9}, "n"),                             # over serve.max_n
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"extra_body": {"bogus": 1}}, "bogus"),     # unknown fields are refused, not ignored
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
])
def test_bad_parameters_are_400_naming_the_parameter(shared, kwargs, param):
    with pytest.raises(openai.BadRequestError) as err:
        shared.client().chat.completions.create(model="tiny", messages=MESSAGES, **kwargs)
    assert err.value.status_code == 400 and err.value.param == param
    assert err.value.body["type"] == "invalid_request_error" and isinstance(err.value.code, str)


def test_unknown_model_is_404_and_context_overflow_is_400(shared):
    client = shared.client()
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert err.value.code == "model_not_found" and err.value.param == "model"
    long = [{"role": "user", "content": "fee " * 400}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=long, max_tokens=4)
    assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
    # a prompt that fits serve.max_prompt_tokens (200) but not the context (256) with 64 more tokens
    near = next(m for k in range(1, 400) if 192 < _prompt_tokens(shared.tokenizer, m := [
        {"role": "user", "content": "fee 15 " * k}]) <= 200)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=near, max_tokens=64)
    assert err.value.code == "context_length_exceeded" and err.value.param == "max_tokens"


def test_body_over_the_cap_is_413_and_bad_json_is_400(shared):
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 5000}]}
    resp = httpx.post(shared.url + "/v1/chat/completions", json=big, timeout=30)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
    resp = httpx.post(shared.url + "/v1/chat/completions", content=b"{not json", timeout=30,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    resp = httpx.get(shared.url + "/v1/nothing-here", timeout=30)
    assert resp.status_code == 404 and set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_health_ready_and_metrics(shared):
    assert httpx.get(shared.url + "/health").json() == {"status": "ok"}
    assert httpx.get(shared.url + "/ready").status_code == 200
    shared.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    text = httpx.get(shared.url + "/metrics").text
    for name in ("domaintune_requests_total", "domaintune_time_to_first_token_seconds_bucket",
                 "domaintune_inter_token_latency_seconds_bucket", "domaintune_num_requests_running",
                 "domaintune_num_requests_waiting", 'domaintune_rejections_total{reason="overloaded"}',
                 "domaintune_generation_tokens_total"):
        assert name in text
    assert "wire transfer" not in text  # no prompt text in metrics


def test_parallel_requests_all_complete_in_one_batch(shared):
    results, errors = [], []

    def call(i):
        try:
            results.append(shared.client().completions.create(model="tiny", prompt=f"Savings {i}", max_tokens=24,
                                                              temperature=0))
        except Exception as exc:  # collected: a failure must fail the test, not vanish in a thread
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 6
    assert shared.engine.stats().peak_running > 1


# --------------------------------------------------------------------------- servers of their own
class _Gate(torch.nn.Module):
    """Wraps the model; each forward waits until the test opens the gate (makes timing deterministic)."""

    def __init__(self, model, fail_at: int | None = None, delay_s: float = 0.0):
        super().__init__()
        self.inner, self.config = model, model.config
        self.open, self.calls, self.fail_at, self.delay_s = threading.Event(), 0, fail_at, delay_s

    def forward(self, **kwargs):
        self.open.wait(60)
        time.sleep(self.delay_s)
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("simulated engine failure")
        return self.inner(**kwargs)


def test_full_queue_answers_503_with_retry_after_fast(start_server, loaded):
    gate = _Gate(loaded[0])
    server = start_server(loaded, model_wrapper=gate, max_running=1, max_waiting=1, retry_after_s=2)
    body = {"model": "tiny", "prompt": "The bank", "max_tokens": 2}
    pending = [threading.Thread(target=httpx.post, args=(server.url + "/v1/completions",),
                                kwargs={"json": body, "timeout": 60}) for _ in range(2)]
    for t in pending:
        t.start()
    assert wait_for(lambda: server.engine.stats().running + server.engine.stats().waiting == 2)
    t0 = time.perf_counter()
    resp = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    elapsed = time.perf_counter() - t0
    assert resp.status_code == 503 and resp.headers["retry-after"] == "2"
    assert resp.json()["error"]["type"] == "overloaded_error"
    assert elapsed < 0.5  # the bar is 50 ms on an idle machine; 10x slack for a shared 2-core box
    gate.open.set()
    for t in pending:
        t.join(60)
    assert 'domaintune_rejections_total{reason="overloaded"} 1.0' in httpx.get(server.url + "/metrics").text


@pytest.mark.slow
def test_client_disconnect_mid_stream_frees_the_slot(start_server, loaded):
    gate = _Gate(loaded[0], delay_s=0.02)  # 200 tokens take > 4 s: the cancel must come first
    gate.open.set()
    server = start_server(loaded, model_wrapper=gate)
    server.engine._eos = set()  # keep generating until cancelled
    stream = server.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=200,
                                                      temperature=0, stream=True)
    next(iter(stream))
    assert wait_for(lambda: server.engine.stats().running == 1)
    stream.close()
    assert wait_for(lambda: server.engine.stats().running == 0), "the cancelled sequence kept its slot"
    assert server.engine.stats().steps < 150


@pytest.mark.slow
def test_non_stream_client_disconnect_frees_the_slot(start_server, loaded):
    gate = _Gate(loaded[0], delay_s=0.02)
    gate.open.set()
    server = start_server(loaded, model_wrapper=gate)
    server.engine._eos = set()
    body = {"model": "tiny", "prompt": "The bank", "max_tokens": 200}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=0.5)
    assert wait_for(lambda: server.engine.stats().running == 0)
    assert server.engine.stats().steps < 150


def test_mid_stream_failure_reaches_the_openai_client_as_an_error(start_server, loaded):
    gate = _Gate(loaded[0], fail_at=3)
    gate.open.set()
    server = start_server(loaded, model_wrapper=gate)
    stream = server.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20,
                                                      temperature=0, stream=True)
    with pytest.raises(openai.APIError, match="simulated engine failure"):
        list(stream)
    assert wait_for(lambda: server.engine.stats().running == 0)
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": MESSAGES, "max_tokens": 20, "stream": True}) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert '"error"' in lines[-2] and lines[-1] == "data: [DONE]"


@pytest.mark.slow
def test_bounded_load_every_request_is_answered_200_or_503_never_5xx_or_a_hang(start_server, loaded):
    server = start_server(loaded, max_running=4, max_waiting=4)
    statuses, body = [], {"model": "tiny", "prompt": "Savings accounts", "max_tokens": 16}

    def call():
        statuses.append(httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code)

    threads = [threading.Thread(target=call) for _ in range(16)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == 16 and set(statuses) <= {200, 503} and statuses.count(200) >= 8
    assert time.monotonic() - t0 < 60
    assert wait_for(lambda: server.engine.stats().running + server.engine.stats().waiting == 0)


def test_every_generation_request_is_audited_once_and_permissions_are_enforced(start_server, loaded):
    from domaintune.serve.hooks import CHAT, Hooks, Principal

    class Recorder:
        def __init__(self):
            self.records = []

        def record(self, record):
            self.records.append(record)

    class ChatOnly:
        def authenticate(self, headers):
            return Principal(id="clerk", tenant="bank-a", permissions=frozenset({CHAT}))

    audit = Recorder()
    server = start_server(loaded, hooks=Hooks(auth=ChatOnly(), audit=audit))
    client = server.client()
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, user="alice")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=9)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.completions.create(model="tiny", prompt="x")
    assert err.value.code == "permission_denied"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.list()
    assert [(r.route, r.status) for r in audit.records] == [
        ("/v1/chat/completions", 200), ("/v1/chat/completions", 400), ("/v1/completions", 403),
        ("/v1/models", 403)]  # every route is audited (serve/store/trail.py), not only generation
    ok = audit.records[0]
    assert (ok.principal, ok.tenant, ok.user, ok.model) == ("clerk", "bank-a", "alice", "tiny")
    assert ok.prompt_tokens > 0 and 1 <= ok.completion_tokens <= 3 and ok.finish_reasons
    assert audit.records[1].error_code == "invalid_value"
    assert "wire transfer" not in repr(audit.records)  # ids and counts, never the prompt text
