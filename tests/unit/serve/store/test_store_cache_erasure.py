"""Principal-keyed response cache, erasure, and the canary: no user text in any file on disk."""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import httpx
from store_helpers import BearerPrincipals, client_as, principal, records_settings

from domaintune.serve.hooks import Hooks, Prompt
from domaintune.serve.store.cache import ResponseCache, cache_key
from domaintune.serve.store.crypto import Keyring, Vault

MSG = [{"role": "user", "content": "what is the refund policy"}]


def _ask(client, content="what is the refund policy", **kw):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                          max_tokens=4, temperature=0, **kw)


def test_the_cache_key_covers_principal_scope_acl_index_model_template_and_request(tmp_path):
    alice = principal("alice", groups=frozenset({"hr"}))
    prompt = Prompt(messages=MSG, acl_fingerprint="acl-1", index_version="v1")
    base = cache_key(alice, prompt, "tiny", None, {"ids": [1, 2]})
    assert base == cache_key(alice, Prompt(messages=MSG, acl_fingerprint="acl-1", index_version="v1"), "tiny", None,
                             {"ids": [1, 2]})
    changed = [cache_key(principal("bob", groups=frozenset({"hr"})), prompt, "tiny", None, {"ids": [1, 2]}),
               cache_key(replace(alice, groups=frozenset()), prompt, "tiny", None, {"ids": [1, 2]}),  # grant revoked
               cache_key(replace(alice, tenant="t2"), prompt, "tiny", None, {"ids": [1, 2]}),
               cache_key(replace(alice, scopes={"kbs": frozenset({"a"})}), prompt, "tiny", None, {"ids": [1, 2]}),
               cache_key(alice, replace(prompt, acl_fingerprint="acl-2"), "tiny", None, {"ids": [1, 2]}),
               cache_key(alice, replace(prompt, index_version="v2"), "tiny", None, {"ids": [1, 2]}),
               cache_key(alice, replace(prompt, template_id="t@2"), "tiny", None, {"ids": [1, 2]}),
               cache_key(alice, prompt, "tiny-v2", None, {"ids": [1, 2]}),
               cache_key(alice, prompt, "tiny", "B", {"ids": [1, 2]}),
               cache_key(alice, prompt, "tiny", None, {"ids": [1, 3]})]
    assert base not in changed and len(set(changed)) == len(changed)


def test_entries_expire_are_evicted_and_erased(tmp_path):
    vault = Vault(Keyring({"k1": b"k" * 32}), tmp_path / "keys.sqlite")
    cache = ResponseCache(tmp_path / "c.sqlite", vault, ttl_s=60, max_entries=2)
    alice = principal("alice")
    for key in ("a", "b", "c"):
        cache.put(key, alice, {"choices": [["x", "stop"]], "completion_tokens": 1})
    assert cache.get("a", alice) is None and cache.get("c", alice) is not None  # oldest evicted above max_entries
    assert cache.get("c", principal("bob")) is None  # a stored key never serves another subject
    assert cache.erase("alice") == 2 and cache.get("c", alice) is None
    short = ResponseCache(tmp_path / "d.sqlite", vault, ttl_s=1, max_entries=5)
    short.put("k", alice, {"choices": [["x", "stop"]], "completion_tokens": 1})
    time.sleep(1.1)
    assert short.get("k", alice) is None


def test_cache_through_the_server_is_per_principal_and_reports_its_hit_ratio(start_server, loaded, tmp_path):
    auth = BearerPrincipals(alice=principal("alice"), bob=principal("bob"))
    server = start_server(loaded, hooks=Hooks(auth=auth), **records_settings(tmp_path, cache=True))
    alice, bob = client_as(server, "alice"), client_as(server, "bob")
    first = _ask(alice)
    again = _ask(alice)
    assert again.choices[0].message.content == first.choices[0].message.content and again.id != first.id
    assert again.usage.completion_tokens == first.usage.completion_tokens
    _ask(bob)  # same prompt, another principal: a miss
    auth.principals["alice"] = principal("alice", groups=frozenset({"new-grant"}))  # a grant changed: a miss
    _ask(alice)
    alice.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, temperature=1, seed=1)  # never cached
    cached = [r["cached"] for r in reversed(server.app.state.audit.query())]
    assert cached == [False, True, False, False, False]
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer alice"}).text
    assert 'domaintune_cache_lookups_total{result="hit"} 1.0' in metrics
    assert 'domaintune_cache_lookups_total{result="miss"} 3.0' in metrics
    assert "domaintune_cache_hit_ratio 0.25" in metrics


def test_erasure_removes_sessions_and_cache_and_shreds_audit_content(start_server, loaded, tmp_path):
    auth = BearerPrincipals(alice=principal("alice"), bob=principal("bob"))
    server = start_server(loaded, hooks=Hooks(auth=auth), **records_settings(tmp_path, sessions=True, cache=True))
    alice, bob = client_as(server, "alice"), client_as(server, "bob")
    sid = _ask(alice, extra_body={"session_id": "new"}).model_extra["session_id"]
    _ask(alice, "cache me")
    _ask(bob, "bob's own question", extra_body={"session_id": "new"})
    audit = server.app.state.audit
    assert httpx.delete(server.url + "/v1/users/alice").status_code == 401
    done = httpx.delete(server.url + "/v1/users/alice", headers={"Authorization": "Bearer bob"}).json()
    # two cached answers: the plain one and the temperature-0 session turn (keyed on its whole prompt)
    assert done == {"user": "alice", "sessions_deleted": 1, "cache_entries_deleted": 2, "review_items_deleted": 0,
                        "data_key_destroyed": True}
    assert httpx.get(f"{server.url}/v1/sessions/{sid}", headers={"Authorization": "Bearer alice"}).status_code == 404
    _ask(alice, "cache me")
    assert audit.query(limit=1)[0]["cached"] is False  # the cached answer is gone
    verdict = audit.verify()  # 3 asks, 2 erasure calls (401, 200), 1 GET, 1 ask: intact after the shredding
    assert verdict["ok"] and verdict["records"] == 7
    out = io.StringIO()
    audit.export(out, with_content=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    by_subject = {(r["subject"], "text" in r) for r in lines if r["route"] == "/v1/chat/completions"}
    assert ("bob", True) in by_subject and ("alice", False) in by_subject
    old_alice = [r for r in lines if r["subject"] == "alice" and r["seq"] < 4]
    assert all("content_error" in r and r["status"] == 200 for r in old_alice)  # metadata kept, content unreadable


def test_a_canary_in_a_prompt_is_in_no_file_on_disk(start_server, loaded, tmp_path):
    canary = "CANARY-7f3a91-zebra"
    root = tmp_path / "state"
    root.mkdir()
    handler = logging.FileHandler(tmp_path / "server.log")
    handler.setLevel(logging.DEBUG)
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: hold-canary, keywords: [flag-me], action: review, "
                                         "review: hold}\n  - {name: flag-all, stage: output, min_chars: 0, "
                                         "action: review, review: deliver}\n")
    rules = {"file": str(tmp_path / "rules.yaml"), "review_db": str(root / "review.sqlite")}
    server = start_server(loaded, rules=rules,  # uvicorn sets its logging
                          **records_settings(root, sessions=True, cache=True))
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    for log in loggers:
        log.addHandler(handler)
    try:
        client = server.client()
        sid = _ask(client, f"my secret is {canary}", extra_body={"session_id": "new"}).model_extra["session_id"]
        _ask(client, f"again {canary}", extra_body={"session_id": sid})
        _ask(client, f"cached {canary}")
        _ask(client, f"cached {canary}")
        held = _ask(client, f"flag-me {canary}")  # both prompt and answer wait in the review queue
        assert held.model_extra["review"]["status"] == "held"
        queued = server.app.state.review.get(held.model_extra["review"]["item_id"])
        assert canary in queued["prompt"]  # readable through the queue, sealed on disk
        assert server.app.state.sessions.messages(principal("local", user=None), sid)[0]["content"].endswith(canary)
        assert _files_with(tmp_path, canary) == []  # while running: databases, -wal, -shm
        server.stop()
    finally:
        logging.getLogger().setLevel(level)
        for log in loggers:
            log.removeHandler(handler)
        handler.close()
    names = {p.name for p in root.iterdir()}
    assert {"audit.sqlite", "sessions.sqlite", "cache.sqlite", "user-keys.sqlite", "review.sqlite"} <= names
    assert (tmp_path / "server.log").stat().st_size > 0
    assert _files_with(tmp_path, canary) == []


def _files_with(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_a_revoked_grant_misses_the_cache_through_the_server(start_server, loaded, tmp_path):
    auth = BearerPrincipals(alice=principal("alice", groups=frozenset({"hr"})))
    server = start_server(loaded, hooks=Hooks(auth=auth), **records_settings(tmp_path, cache=True))
    alice = client_as(server, "alice")
    _ask(alice)
    _ask(alice)  # a hit while the grant holds
    auth.principals["alice"] = principal("alice")  # the hr grant is revoked: the answer cached under it is not served
    _ask(alice)
    cached = [r["cached"] for r in reversed(server.app.state.audit.query(route="/v1/chat/completions"))]
    assert cached == [False, True, False]
