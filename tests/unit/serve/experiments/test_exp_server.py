"""Templates, A/B arms, model versions and feedback through a real server and the official openai client."""

from __future__ import annotations

import httpx
import openai
import pytest
from exp_helpers import ListAuditor, build_version_dir, start_experiment_server

from domaintune.serve.hooks import Hooks
from domaintune.serve.hooks import LogAuditor as _LogAuditor  # noqa: F401  (the CLI's default auditor)

MESSAGES = [{"role": "user", "content": "What is the wire transfer fee?"}]


def _extra(obj, name):
    return (obj.model_extra or {}).get(name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from domaintune.config.serve import ServeConfig

    root = tmp_path_factory.mktemp("exp-server")
    v1, v2 = build_version_dir(root / "v1", seed=0), build_version_dir(root / "v2", seed=1)
    settings = ServeConfig(port=0, max_tokens_cap=16, experiments={
        "store": str(root / "ab.db"),
        "active": [{"name": "tone", "variants": [{"name": "A", "weight": 1, "template": "summarize"},
                                                 {"name": "B", "weight": 1, "template": "classify",
                                                  "model": "tiny-v2"}]}]},
        models={"versions": [{"id": "tiny-v2", "path": str(v2), "description": "new tune"}]})
    auditor = ListAuditor()
    server = start_experiment_server(v1, {"tiny-v2": v2}, settings, Hooks(audit=auditor))
    server.auditor, server.root, server.v1, server.v2 = auditor, root, v1, v2
    yield server
    server.stop()


def _record(server, reply_id: str):
    rid = reply_id.removeprefix("chatcmpl-").removeprefix("cmpl-")
    return next(r for r in server.auditor.records if r.request_id == rid)


def test_a_template_chosen_per_request_through_extra_body(setup):
    client = setup.client()
    plain = client.chat.completions.create(model="tiny-v2", messages=MESSAGES, max_tokens=4, temperature=0)
    templated = client.chat.completions.create(model="tiny-v2", messages=MESSAGES, max_tokens=4, temperature=0,
                                               extra_body={"template": "qa-grounded-zh"})
    assert _extra(plain, "template") is None and _extra(templated, "template") == "qa-grounded-zh@1"
    assert templated.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the system prompt and example went in
    record = _record(setup, templated.id)
    assert record.template_id == "qa-grounded-zh@1" and record.variant is None  # pinned: not enrolled
    assert _record(setup, plain.id).template_id == "model-chat-template"


def test_unknown_template_is_a_400_with_a_suggestion(setup):
    with pytest.raises(openai.BadRequestError) as err:
        setup.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                               extra_body={"template": "sumarize"})
    assert err.value.code == "template_not_found" and "summarize" in str(err.value)


def test_arms_are_sticky_per_user_and_switch_template_and_model(setup):
    client, seen = setup.client(), {}
    for i in range(16):
        reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2, temperature=0,
                                               user=f"user-{i}")
        variant = _extra(reply, "variant")
        again = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2, user=f"user-{i}")
        assert _extra(again, "variant") == variant
        expected = {"tone:A": ("tiny", "summarize@1"), "tone:B": ("tiny-v2", "classify@1")}[variant]
        assert (reply.model, _extra(reply, "template")) == expected
        record = _record(setup, reply.id)
        assert (record.variant, record.model, record.template_id) == (variant, *expected)
        seen[variant] = reply
    assert set(seen) == {"tone:A", "tone:B"}


def test_the_final_stream_chunk_carries_variant_and_template(setup):
    chunks = list(setup.client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3,
                                                         user="streamer", stream=True))
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final and _extra(final[-1], "variant") in ("tone:A", "tone:B")
    assert all(_extra(c, "variant") is None for c in chunks if c.choices and not c.choices[0].finish_reason)


def test_feedback_then_report_over_http(setup):
    client = setup.client()
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2, user="rater")
    fb = httpx.post(setup.url + "/v1/feedback", json={"request_id": reply.id, "thumbs": "up"})
    assert fb.status_code == 200 and fb.json()["score"] == 1.0
    bad = httpx.post(setup.url + "/v1/feedback", json={"request_id": reply.id, "score": 7})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
    unknown = httpx.post(setup.url + "/v1/feedback", json={"request_id": "chatcmpl-nope", "score": 1})
    assert unknown.status_code == 404
    report = httpx.get(setup.url + "/v1/experiments/tone/report").json()
    arm = report["variants"][_extra(reply, "variant").split(":")[1]]
    assert arm["feedback"]["n"] >= 1 and arm["n"] >= 1 and report["control"] == "A"
    assert httpx.get(setup.url + "/v1/experiments/nope/report").status_code == 404
    listed = httpx.get(setup.url + "/v1/experiments").json()["data"]
    assert [e["name"] for e in listed] == ["tone"]


def test_templates_and_versions_are_listed(setup):
    names = {t["name"] for t in httpx.get(setup.url + "/v1/templates").json()["data"]}
    assert {"qa-grounded", "bank-customer-service-zh"} <= names
    assert [m.id for m in setup.client().models.list().data] == ["tiny", "tiny-v2"]
    assert httpx.get(setup.url + "/v1/model-versions").json()["versions"][0]["id"] == "tiny-v2"


def test_promote_and_rollback_switch_the_served_name_on_the_next_request(setup):
    from domaintune.serve.models_registry import change

    client, store, auditor = setup.client(), setup.app.state.models.store, ListAuditor()
    pinned = {"template": "summarize"}  # pinned requests are not enrolled, so the alias alone decides

    def ask(model):
        return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=8, temperature=0,
                                              extra_body=pinned)
    old, new = ask("tiny"), ask("tiny-v2")
    assert old.choices[0].message.content != new.choices[0].message.content  # really two different models
    state = change(store, "tiny", "promote", "tiny-v2", ["tiny-v2"], "tester", auditor)
    promoted = ask("tiny")
    assert promoted.model == "tiny-v2" and promoted.choices[0].message.content == new.choices[0].message.content
    change(store, "tiny", "rollback", None, ["tiny-v2"], "tester", auditor)
    back = ask("tiny")
    assert back.model == "tiny" and back.choices[0].message.content == old.choices[0].message.content
    assert [r.route for r in auditor.records] == ["cli:serve-models promote", "cli:serve-models rollback"]
    assert state["previous"] is None and auditor.records[0].principal == "tester"
    with pytest.raises(Exception, match="nothing to roll back"):
        change(store, "tiny", "rollback", None, ["tiny-v2"], "tester", auditor)


def test_without_configuration_the_routes_say_what_to_configure(start_server, loaded):
    server = start_server(loaded)
    reply = httpx.post(server.url + "/v1/feedback", json={"request_id": "x", "score": 1})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_configured"
    assert httpx.get(server.url + "/v1/templates").status_code == 200  # the shipped library is always there
