"""The leak suite: several users with overlapping groups, every document holding a unique canary.
For every user and every query (including the exact canary of documents they may not read), no
forbidden chunk reaches the retrieval results, the prompt the engine receives (a spy engine) or the
citations; also after a revoke and a re-index. The oracle below is written from the label table,
independently of the code under test."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import yaml
from kb_helpers import HashEmbedder, SpyEngine, ThreadServer, count_tokens, load, write_run

from domaintune.kb.service import build_from_config, open_from_config
from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Hooks, Principal
from domaintune.serve.kb_hook import KBRetriever, KBService
from domaintune.serve.permissions import ROLES

WORDS = ["amber", "basalt", "cobalt", "dahlia", "ember", "fjord", "garnet", "harbor", "iris", "jasper", "kelp", "lumen"]
LABELS = {  # document -> labels (sidecar); "sealed" has none: nobody governed may read it
    "pub": ["public"], "fin": ["group:finance"], "hr": ["group:hr"], "eng": ["group:eng"],
    "alice": ["user:alice"], "dave": ["user:dave"], "fin-eng": ["group:finance", "group:eng"],
    "hr-fin": ["group:hr", "group:finance"], "sealed": [],
}
USERS = {"alice": {"finance", "hr"}, "bob": {"finance"}, "carol": {"eng"}, "dave": set(), "erin": {"hr", "eng"}}


def canary(doc: str) -> str:
    i = sorted(LABELS).index(doc)
    return f"canary {WORDS[i]} {WORDS[(i + 5) % 12]} zq{i}x"


def documents() -> list[dict]:
    filler = "Quarterly figures are summarised below. The committee meets monthly. Budgets are reviewed."
    return [{"id": d, "text": f"Report {d}\n\n{filler} The code word is {canary(d)}. {filler} {filler}"}
            for d in LABELS]


def readable(user: str, groups: set[str], labels: Mapping[str, list[str]]) -> set[str]:
    mine = {"public", f"user:{user}", *(f"group:{g}" for g in groups)}
    return {d for d, ls in labels.items() if mine & set(ls)}


class KeyAuth:
    """Bearer <user> -> that user's principal (role user), as governance would resolve a key."""

    def __init__(self, users):
        self.users = users

    def authenticate(self, headers):
        user = headers.get("authorization", "").removeprefix("Bearer ")
        if user not in self.users:
            raise ApiError(401, "unknown key", code="invalid_api_key")
        return Principal(id=user, user=user, groups=frozenset(self.users[user]), key_id=f"k-{user}", role="user",
                         permissions=ROLES["user"])


def _setup(tmp_path, labels):
    (tmp_path / "acl.yaml").write_text(yaml.safe_dump(labels))
    config = write_run(tmp_path, documents(), kb={"name": "corp", "chunk": {"max_tokens": 24, "overlap_tokens": 6},
                                                  "sources": [{"stream": "docs", "acl_file": "acl.yaml"}]})
    cfg = load(config)
    emb = HashEmbedder()
    build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
    return cfg, emb


def _queries():
    return [canary(d) for d in LABELS] + ["code word", "quarterly figures committee", "Report fin", "canary"]


def _check_retrieval(kb, users, labels) -> int:
    leaks = 0
    for user, groups in users.items():
        allowed = readable(user, groups, labels)
        principal = Principal(id=user, user=user, groups=frozenset(groups), key_id=f"k-{user}")
        for q in _queries():
            for mode in ("lexical", "dense", "hybrid"):
                hits = kb.search(principal, q, 50, mode=mode)
                leaks += sum(h.document_id not in allowed for h in hits)
                if q == canary(next(iter(allowed), "pub")) and allowed:
                    assert hits, f"{user} cannot find a document it may read"
    return leaks


def _check_server(server, engine, users, labels) -> int:
    leaks = 0
    for user, groups in users.items():
        allowed = readable(user, groups, labels)
        forbidden = [canary(d) for d in labels if d not in allowed]
        client = server.client(user)
        for q in _queries():
            engine.prompts.clear()
            r = client.chat.completions.create(model="spy", messages=[{"role": "user", "content": q}],
                                               extra_body={"kb": "corp"})
            prompt = engine.prompts[-1].replace(q, "")  # the user's own words are not a leak
            leaks += sum(c in prompt for c in forbidden)
            cited = r.model_extra["citations"]
            leaks += sum(c["document_id"] not in allowed for c in cited)
            leaks += sum(c in r.choices[0].message.content for c in forbidden)
    return leaks


@pytest.fixture
def tokenizer():
    from fixtures.tiny_model import build_tokenizer

    return build_tokenizer()


def test_no_leaks_in_retrieval_prompt_or_citations_also_after_revoke_and_reindex(tmp_path, tokenizer):
    labels = dict(LABELS)
    cfg, emb = _setup(tmp_path, labels)
    kb = open_from_config(cfg, embedder=emb)
    assert _check_retrieval(kb, USERS, labels) == 0
    service = KBService({"corp": kb})
    engine = SpyEngine(tokenizer)
    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app

    settings = ServeConfig(port=0)
    users = {u: set(g) for u, g in USERS.items()}
    hooks = Hooks(auth=KeyAuth(users), retrieval=KBRetriever(service))
    from domaintune.serve.render import ChatRenderer

    server = ThreadServer(create_app(engine, ChatRenderer(tokenizer), settings, hooks), settings)
    try:
        assert server.app.state.kb is service
        assert _check_server(server, engine, users, labels) == 0
        # the spy really sees retrieved text: a readable canary reaches the prompt
        server.client("bob").chat.completions.create(model="spy", messages=[{"role": "user", "content": "zq3x"}],
                                                     extra_body={"kb": "corp"})
        assert canary("fin") in engine.prompts[-1]
        # revoke: bob leaves finance; the finance report becomes HR-only; "pub" is deleted; re-index
        users["bob"] = set()
        labels["fin"] = ["group:hr"]
        del labels["pub"]
        (tmp_path / "acl.yaml").write_text(yaml.safe_dump(labels))
        write_run(tmp_path, [d for d in documents() if d["id"] != "pub"],
                  kb={"name": "corp", "chunk": {"max_tokens": 24, "overlap_tokens": 6},
                      "sources": [{"stream": "docs", "acl_file": "acl.yaml"}]})
        old = kb.version
        report = build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
        assert report.deleted == ["pub"] and report.relabelled == ["fin"] and report.embedded_chunks == 0
        assert service.reindex("corp") != old
        assert _check_retrieval(kb, users, labels) == 0
        assert _check_server(server, engine, users, labels) == 0
        for user in users:  # the deleted document is gone for everyone
            r = server.client(user).chat.completions.create(
                model="spy", messages=[{"role": "user", "content": canary("pub")}], extra_body={"kb": "corp"})
            assert canary("pub") not in engine.prompts[-1].replace(canary("pub"), "", 1)
            assert all(c["document_id"] != "pub" for c in r.model_extra["citations"])
    finally:
        server.stop()


def test_an_app_identity_can_only_narrow(tmp_path):
    cfg, emb = _setup(tmp_path, LABELS)
    kb = open_from_config(cfg, embedder=emb)
    alice = Principal(id="alice", user="alice", groups=frozenset({"finance", "hr"}), key_id="k")
    docs = lambda hits: {h.document_id for h in hits}  # noqa: E731
    everything = docs(kb.search(alice, "code word canary", 50))
    narrowed = docs(kb.search(alice, "code word canary", 50, narrow={"group:finance", "group:eng"}))
    assert narrowed and narrowed < everything and "eng" not in narrowed  # eng was never alice's to gain
    scoped = Principal(id="app", user="alice", groups=frozenset({"finance"}), key_id="k",
                       scopes={"kb_labels": frozenset({"group:eng", "public"})})
    assert docs(kb.search(scoped, "code word canary", 50)) == {"pub"}
    # the open principal (no governance) reads everything, unless the config says none
    assert docs(kb.search(Principal(id="local"), "code word canary", 50)) == set(LABELS)
    kb.open_principal = "none"
    assert docs(kb.search(Principal(id="local"), "code word canary", 50)) == {"pub"}
    assert kb.fingerprint(alice) != kb.fingerprint(scoped)


def test_the_prompt_carries_what_the_response_cache_keys_on(tmp_path):
    """The cache key holds the ACL fingerprint and index version retrieval sets: a relabel and a
    re-index change them, so an answer cached before can never be served after."""
    from domaintune.serve.hooks import Prompt
    from domaintune.serve.store.cache import cache_key

    labels = dict(LABELS)
    cfg, emb = _setup(tmp_path, labels)
    kb = open_from_config(cfg, embedder=emb)
    retriever = KBRetriever(KBService({"corp": kb}))
    bob = Principal(id="bob", user="bob", groups=frozenset({"finance"}), key_id="k-bob", role="user",
                    permissions=ROLES["user"])
    ask = Prompt(messages=[{"role": "user", "content": canary("fin")}], kb="corp")
    before = retriever.augment(bob, ask)
    assert before.acl_fingerprint == kb.fingerprint(bob) and before.index_version == kb.version
    key_before = cache_key(bob, before, "spy", None, {"prompt": [1, 2, 3]})
    labels["fin"] = ["group:hr"]  # bob loses the finance report without any change to his key
    (tmp_path / "acl.yaml").write_text(yaml.safe_dump(labels))
    build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
    kb.reload()
    after = retriever.augment(bob, ask)
    assert after.index_version != before.index_version
    assert cache_key(bob, after, "spy", None, {"prompt": [1, 2, 3]}) != key_before
    sources = after.messages[-1]["content"].split("</sources>", 1)[0]  # the question (the canary) follows it
    assert canary("fin") in before.messages[-1]["content"].split("</sources>", 1)[0]
    assert canary("fin") not in sources and all(canary("fin") not in m["content"] for m in after.messages[:-1])


class EchoSpy(SpyEngine):
    """Answers with the canaries of the sources it was given, so a cached or remembered answer carries them."""

    def submit(self, request):
        prompt = self.tokenizer.decode(request.prompt_ids)
        # the last sources block: the one before it is the one-shot example's made-up sources
        sources = prompt.rsplit("<sources>", 1)[1].split("</sources>", 1)[0] if "<sources>" in prompt else ""
        found = [canary(d) for d in LABELS if canary(d) in sources]  # retrieved text, not the question
        self.answer = f"Found {'; '.join(found)} [1]." if found else "Nothing found."
        return super().submit(request)


def _records(root) -> dict:
    import base64
    import os

    keyring = root / "keyring"
    keyring.write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n", encoding="utf-8")
    keyring.chmod(0o600)
    return {"encryption": {"keyring_file": str(keyring), "user_keys_db": str(root / "user-keys.sqlite")},
            "audit": {"enabled": True, "db": str(root / "audit.sqlite"), "content": "encrypted"},
            "sessions": {"enabled": True, "db": str(root / "sessions.sqlite")},
            "cache": {"enabled": True, "db": str(root / "cache.sqlite")}}


def test_no_leaks_through_cached_answers_or_another_users_session(tmp_path, tokenizer):
    import openai

    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app
    from domaintune.serve.render import ChatRenderer

    labels = dict(LABELS)
    cfg, emb = _setup(tmp_path, labels)
    kb = open_from_config(cfg, embedder=emb)
    service, engine = KBService({"corp": kb}), EchoSpy(tokenizer)
    records = tmp_path / "records"
    records.mkdir()
    settings = ServeConfig(port=0, **_records(records))
    users = {u: set(g) for u, g in USERS.items()}
    server = ThreadServer(create_app(engine, ChatRenderer(tokenizer), settings,
                                     Hooks(auth=KeyAuth(users), retrieval=KBRetriever(service))), settings)

    def ask(user, text, session=None):
        body = {"kb": "corp", **({"session_id": session} if session else {})}
        return server.client(user).chat.completions.create(
            model="spy", temperature=0, messages=[{"role": "user", "content": text}], extra_body=body)

    def leaks(user, text, session=None) -> int:
        allowed = readable(user, users[user], labels)
        answer = ask(user, text, session).choices[0].message.content
        return sum(canary(d) in answer for d in labels if d not in allowed)  # the answer echoes sources only

    try:
        assert server.app.state.cache is not None and server.app.state.sessions is not None
        # every user asks every canary twice: the second answer comes from the cache
        for user in users:
            for d in labels:
                ask(user, canary(d))
        sessions = {u: ask(u, canary("fin"), "new").model_extra["session_id"] for u in users}
        hits = server.app.state.cache.hits
        total = sum(leaks(u, canary(d)) for u in users for d in labels)
        assert server.app.state.cache.hits > hits and total == 0  # the cache answered, and leaked nothing
        # alice's session (it remembers the finance canary) is not bob's, carol's, ...: 404, nothing served
        remembered = [m["content"] for m in server.app.state.sessions.messages(
            Principal(id="alice", user="alice", groups=frozenset(users["alice"]), key_id="k-alice"),
            sessions["alice"])]
        assert any(m.startswith("Found") and canary("fin") in m for m in remembered)  # the answer too
        for user in users:
            if user != "alice":
                calls = len(engine.prompts)
                with pytest.raises(openai.NotFoundError):
                    ask(user, "what did I ask before?", sessions["alice"])
                assert len(engine.prompts) == calls  # refused before anything reached the engine
        # revoke + relabel + re-index: answers cached before are not served to those who lost the rights
        labels["fin"] = ["group:hr"]
        (tmp_path / "acl.yaml").write_text(yaml.safe_dump(labels))
        build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
        service.reindex("corp")
        assert leaks("bob", canary("fin")) == 0 and sum(leaks(u, canary(d)) for u in users for d in labels) == 0
    finally:
        server.stop()
