"""Dialog sessions: ownership (404 for another principal), TTL, deletion, context fitting, SQLite and Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import httpx
import openai
import pytest
from store_helpers import BearerPrincipals, client_as, principal, records_settings

from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Hooks, Prompt
from domaintune.serve.store.crypto import Keyring, Vault
from domaintune.serve.store.layer import fit
from domaintune.serve.store.sessions import RedisSessions, Sessions, SqliteSessions

REDIS = "/usr/bin/redis-server"


@pytest.fixture
def redis_url(tmp_path):
    if not os.path.exists(REDIS):
        pytest.skip(f"{REDIS} is not installed (apt-get install redis-server; .ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(timeout=10)


def _store(kind: str, tmp_path, url: str | None, ttl: int = 60) -> Sessions:
    vault = Vault(Keyring({"k1": b"k" * 32}), tmp_path / "keys.sqlite")
    backend = SqliteSessions(tmp_path / "s.sqlite") if kind == "sqlite" else RedisSessions(url)
    return Sessions(backend, vault, ttl, max_per_owner=3)


def _exercise(store: Sessions) -> None:
    alice, bob = principal("alice"), principal("bob")
    sid = store.create(alice)
    store.append(alice, sid, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    store.append(alice, sid, [{"role": "user", "content": "more"}])
    assert [m["content"] for m in store.messages(alice, sid)] == ["hi", "hello", "more"]
    assert [s["id"] for s in store.list(alice)] == [sid] and store.list(bob) == []
    for call in (store.messages, store.delete, store.info):
        with pytest.raises(ApiError) as err:
            call(bob, sid)
        assert err.value.status == 404 and err.value.code == "session_not_found"
    other_tenant = principal("alice", tenant="other")
    with pytest.raises(ApiError):
        store.messages(other_tenant, sid)
    with pytest.raises(ApiError):
        store.messages(alice, "sess_unknown")
    store.create(alice), store.create(alice)
    with pytest.raises(ApiError) as full:
        store.create(alice)
    assert full.value.status == 429
    store.delete(alice, sid)
    with pytest.raises(ApiError):
        store.messages(alice, sid)
    assert store.erase("alice") == 2 and store.list(alice) == []


def test_sqlite_sessions(tmp_path):
    store = _store("sqlite", tmp_path, None)
    _exercise(store)
    assert b"hello" not in (tmp_path / "s.sqlite").read_bytes() + (tmp_path / "s.sqlite-wal").read_bytes()


def test_redis_sessions_against_a_real_redis_server(tmp_path, redis_url):
    import redis

    store = _store("redis", tmp_path, redis_url)
    _exercise(store)
    sid = store.create(principal("carol"))
    store.append(principal("carol"), sid, [{"role": "user", "content": "canary-redis-7731"}])
    raw = redis.Redis.from_url(redis_url)
    assert all(b"canary-redis-7731" not in blob for blob in raw.lrange(f"dt:m:{sid}", 0, -1))
    assert 0 < raw.ttl(f"dt:s:{sid}") <= 60


def test_ttl_expires_a_session(tmp_path):
    store = _store("sqlite", tmp_path, None, ttl=1)
    sid = store.create(principal("alice"))
    time.sleep(1.1)
    with pytest.raises(ApiError):
        store.messages(principal("alice"), sid)
    assert store.list(principal("alice")) == []


def test_fit_drops_the_oldest_turns_by_rendered_tokens():
    def render(prompt: Prompt) -> list[int]:  # one token per word, plus one per message
        return [0] * sum(len(m["content"].split()) + 1 for m in prompt.messages)

    history = [{"role": r, "content": f"{r} turn {i} " * 3} for i in range(4) for r in ("user", "assistant")]
    new = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "now"}]
    assert fit(history, new, render, 10_000) == new[:1] + history + new[1:]
    kept = fit(history, new, render, 40)
    assert kept[0] == new[0] and kept[-1] == new[1] and kept[1]["role"] == "user"
    assert len(render(Prompt(messages=kept))) <= 40 and history[-1] in kept and history[0] not in kept
    assert fit(history, new, render, 1) == new  # nothing fits: no history; the context check judges the rest


# --------------------------------------------------------------------------- through the real server
def test_sessions_through_the_server(start_server, loaded, tmp_path):
    auth = BearerPrincipals(alice=principal("alice"), bob=principal("bob"))
    server = start_server(loaded, hooks=Hooks(auth=auth),
                          **records_settings(tmp_path, sessions=True, context_tokens=120))
    alice = client_as(server, "alice")
    first = alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "first question"}],
                                          max_tokens=3, extra_body={"session_id": "new"})
    sid = first.model_extra["session_id"]
    assert sid.startswith("sess_")
    chunks = list(alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "second"}],
                                                max_tokens=3, stream=True, extra_body={"session_id": sid}))
    assert chunks[-1].model_extra.get("session_id") == sid
    stored = server.app.state.sessions.messages(principal("alice"), sid)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[0]["content"] == "first question" and stored[1]["content"] == first.choices[0].message.content
    assert server.app.state.audit.query(limit=1)[0]["session_id"] == sid
    third = alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "third"}],
                                          max_tokens=3, extra_body={"session_id": sid})
    assert third.usage.prompt_tokens > first.usage.prompt_tokens  # the history went into the prompt
    for _ in range(6):  # long turns: the budget of 120 tokens drops the oldest, requests keep working
        alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 25}],
                                      max_tokens=3, extra_body={"session_id": sid})
    assert alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=1,
                                         extra_body={"session_id": sid}).usage.prompt_tokens <= 120
    bob = client_as(server, "bob")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        bob.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "steal"}], max_tokens=1,
                                    extra_body={"session_id": sid})
    h = {"Authorization": "Bearer alice"}
    assert [s["id"] for s in httpx.get(server.url + "/v1/sessions", headers=h).json()["data"]] == [sid]
    assert httpx.get(server.url + "/v1/sessions", headers={"Authorization": "Bearer bob"}).json()["data"] == []
    got = httpx.get(f"{server.url}/v1/sessions/{sid}", headers=h).json()
    assert got["id"] == sid and got["messages"][0]["content"] == "first question"
    assert httpx.get(f"{server.url}/v1/sessions/{sid}", headers={"Authorization": "Bearer bob"}).status_code == 404
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}", headers={"Authorization": "Bearer bob"}).status_code == 404
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}", headers=h).json()["deleted"] is True
    assert httpx.get(f"{server.url}/v1/sessions/{sid}", headers=h).status_code == 404
    assert httpx.get(server.url + "/v1/sessions").status_code == 401


def test_session_id_without_sessions_enabled_is_a_400(start_server, loaded):
    server = start_server(loaded)
    with pytest.raises(openai.BadRequestError, match="keeps no sessions"):
        server.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                                max_tokens=1, extra_body={"session_id": "new"})
    assert httpx.get(server.url + "/v1/sessions").json()["error"]["code"] == "sessions_disabled"


def test_an_expired_session_is_gone_through_the_server(start_server, loaded, tmp_path):
    auth = BearerPrincipals(alice=principal("alice"))
    server = start_server(loaded, hooks=Hooks(auth=auth), **records_settings(tmp_path, sessions=True, ttl_s=1))
    alice = client_as(server, "alice")
    sid = alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=1,
                                        extra_body={"session_id": "new"}).model_extra["session_id"]
    time.sleep(2.2)  # ttl_s=1 after the last turn
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "again"}], max_tokens=1,
                                      extra_body={"session_id": sid})
    assert httpx.get(f"{server.url}/v1/sessions/{sid}", headers={"Authorization": "Bearer alice"}).status_code == 404
