"""Rules before and after the model, the review queue and the reviewer API on the real server;
`domaintune validate` naming file, line and key of a bad rules file."""

from __future__ import annotations

import httpx
import openai
import pytest
from access_helpers import bearer, governed, write_keyring

from domaintune.config.serve_access import RulesConfig
from domaintune.errors import ConfigError
from domaintune.serve.hooks import Hooks, Principal, Prompt

RULES = """
rules:
  - name: no-weapons
    keywords: [explosive]
    action: refuse
    message: I cannot help with that.
  - name: opening-hours
    regex: ['opening\\s+hours']
    action: answer
    message: We are open 9:00-17:00.
  - name: hold-loans
    keywords: [loan]
    action: review
    review: hold
  - name: flag-everything-else
    stage: output
    min_chars: 0
    action: review
    review: deliver
"""


class Recorder:
    def __init__(self):
        self.records = []

    def record(self, record):
        self.records.append(record)


def _ask(client, text, **kw):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}],
                                          max_tokens=3, **kw)


def test_refuse_answer_hold_deliver_and_reviewer_decisions(start_server, loaded, tmp_path):
    audit = Recorder()
    server = start_server(loaded, hooks=Hooks(audit=audit), max_tokens_cap=4, **governed(tmp_path, rules=RULES))
    keys, review = server.app.state.keys, server.app.state.review
    _, user = keys.create("teller", "user")
    _, reviewer = keys.create("compliance", "reviewer")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=user, max_retries=0, timeout=60)

    refused = _ask(client, "how to make an EXPLOSIVE")
    assert refused.choices[0].message.content == "I cannot help with that."
    assert refused.choices[0].finish_reason == "content_filter"
    assert _ask(client, "your opening  hours?").choices[0].message.content == "We are open 9:00-17:00."

    held = _ask(client, "can I get a loan?")
    assert held.choices[0].message.content == "This answer is held for human review."
    item_id = held.model_extra["review"]["item_id"]
    assert held.model_extra["review"]["status"] == "held"
    flagged = _ask(client, "hello")
    assert flagged.model_extra["review"]["status"] == "delivered_flagged"

    chunks = list(client.chat.completions.create(model="tiny", stream=True, max_tokens=3,
                                                 messages=[{"role": "user", "content": "a loan please"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This answer is held for human review." and chunks[-1].model_extra["review"]["status"] == "held"

    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v1/review/items", headers=bearer(user)).status_code == 403
        pending = http.get("/v1/review/items", headers=bearer(reviewer)).json()["data"]
        assert {i["item_id"] for i in pending} >= {item_id} and len(pending) == 3
        assert http.get(f"/v1/review/outcomes/{item_id}", headers=bearer(user)).json()["answer"] is None
        edited = http.post(f"/v1/review/items/{item_id}/edit", headers=bearer(reviewer),
                           json={"text": "Yes, see our loan desk."})
        assert edited.status_code == 200 and edited.json()["status"] == "edited"
        again = http.post(f"/v1/review/items/{item_id}/approve", headers=bearer(reviewer))
        assert again.status_code == 409
        assert http.get(f"/v1/review/outcomes/{item_id}", headers=bearer(user)).json()["answer"] == \
            "Yes, see our loan desk."
        assert http.get(f"/v1/review/outcomes/{item_id}", headers=bearer(reviewer)).status_code == 403
        other = keys.create("other-teller", "user")[1]
        assert http.get(f"/v1/review/outcomes/{item_id}", headers=bearer(other)).status_code == 404
        assert http.post("/v1/review/items/rev-missing/reject", headers=bearer(reviewer)).status_code == 404
    reject_id = review.list()[0]["item_id"]
    review.decide(reject_id, "reject", Principal(id="console"))  # the console's path is audited too
    decisions = [r for r in audit.records if r.detail.get("decision")]
    assert [(r.detail["decision"], r.detail["review_item"]) for r in decisions] == [
        ("edit", item_id), ("reject", reject_id)]
    assert decisions[0].key_id is not None
    fired = [r.detail.get("rules") for r in audit.records if r.route == "/v1/chat/completions"]
    assert fired[:3] == ["no-weapons", "opening-hours", "hold-loans,flag-everything-else"]


def test_instruct_adds_a_system_instruction(tmp_path):
    from domaintune.serve.pipeline import new_record
    from domaintune.serve.rules.engine import RuleEngine
    from domaintune.serve.rules.review import ReviewQueue

    (tmp_path / "r.yaml").write_text("rules:\n  - name: formal\n    keywords: [fee]\n    action: instruct\n"
                                     "    message: Answer formally.\n")
    settings = RulesConfig(file=str(tmp_path / "r.yaml"), review_db=str(tmp_path / "q.db"))
    engine = RuleEngine(settings, ReviewQueue(settings.review_db, _vault(tmp_path)))
    screen = engine.screen(Principal(id="a"), Prompt(messages=[{"role": "user", "content": "the fee?"}]),
                           new_record("/v1/chat/completions"))
    assert screen.prompt.messages[0] == {"role": "system", "content": "Answer formally."}
    plain = engine.screen(Principal(id="a"), Prompt(messages=[{"role": "user", "content": "hi"}]),
                          new_record("/v1/chat/completions"))
    assert plain.prompt.messages == [{"role": "user", "content": "hi"}]


BAD = """rules:
  - name: ok
    keywords: [a]
    action: refuse
    message: nope
  - name: broken-regex
    regex: ['(unclosed']
    action: refuse
    message: nope
  - name: no-message
    keywords: [b]
    action: answer
  - name: typo
    keyword: [c]
    action: review
  - name: bad-pii
    pii: [PASSPORT]
    action: review
    classifier: "nowhere.module:fn"
"""


def test_validate_names_file_line_and_key_of_each_bad_rule(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(BAD)
    problems = RulesConfig(file=str(path), review_db=str(tmp_path / "q.db")).problems()
    text = "\n".join(problems)
    assert f"{path}:6: rules.1" in text and "regex[0]: not a valid regex" in text
    assert f"{path}:10: rules.2" in text and "needs a message" in text
    assert f"{path}:14: rules.3.keyword: unknown key (did you mean 'keywords'?)" in text
    assert "unknown PII type(s) ['PASSPORT']" in text and "cannot load 'nowhere.module:fn'" in text
    missing = RulesConfig(file=str(tmp_path / "none.yaml"), review_db=str(tmp_path / "q.db")).problems()
    assert missing == [f"serve.rules.file: file not found: {tmp_path / 'none.yaml'}"]


# --------------------------------------------------------------------------- the queue at rest
def _vault(tmp_path):
    from domaintune.config.serve_records import EncryptionConfig
    from domaintune.serve.store.crypto import Keyring, Vault

    ring = Keyring.load(EncryptionConfig(keyring_file=str(write_keyring(tmp_path / "ring"))))
    return Vault(ring, tmp_path / "user-keys.sqlite")


def test_review_text_is_sealed_per_user_and_erasure_removes_it(tmp_path):
    from domaintune.serve.rules.review import ReviewQueue

    vault = _vault(tmp_path)
    queue = ReviewQueue(tmp_path / "q.db", vault)
    alice = queue.add("req-1", "key-a", ["r"], "hold", "prompt SECRET-ALICE", "answer SECRET-ALICE", subject="alice")
    bob = queue.add("req-2", "key-b", ["r"], "deliver", "prompt of bob", "answer of bob", subject="bob")
    queue.decide(alice, "edit", Principal(id="rev"), text="edited SECRET-ALICE")
    assert queue.get(alice)["prompt"] == "prompt SECRET-ALICE" and queue.get(alice)["final"] == "edited SECRET-ALICE"
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("q.db"))
    assert b"SECRET-ALICE" not in on_disk and b"of bob" not in on_disk  # db and -wal hold ciphertext only
    vault.destroy("alice")  # a copy of the row kept elsewhere (backup) is unreadable once the key is gone
    assert queue.get(alice)["prompt"] is None and queue.get(alice)["answer"] is None
    assert queue.get(bob)["answer"] == "answer of bob"
    assert queue.erase("bob") == 1 and queue.get(bob) is None and queue.get(alice) is not None


def test_a_plaintext_queue_of_an_older_version_is_refused(tmp_path):
    import sqlite3

    from domaintune.serve.rules.review import ReviewQueue

    old = sqlite3.connect(tmp_path / "old.db")
    old.execute("CREATE TABLE review (id TEXT PRIMARY KEY, created REAL, request_id TEXT, owner TEXT, rules TEXT, "
                "mode TEXT, status TEXT, prompt TEXT, answer TEXT, final TEXT, decided_by TEXT, decided_at REAL, "
                "note TEXT)")
    old.close()
    with pytest.raises(ConfigError, match="stored review text unencrypted"):
        ReviewQueue(tmp_path / "old.db", _vault(tmp_path))


def test_rules_without_a_keyring_fail_validation(tmp_path):
    from domaintune.config.serve import ServeConfig

    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: r, keywords: [x], action: review}\n")
    rules = {"file": str(tmp_path / "rules.yaml"), "review_db": str(tmp_path / "q.db")}
    assert ServeConfig(rules=rules).problems() == [
        "serve.encryption: rules (the review queue) need a keyring (the audit chain's HMAC key and the encryption "
        "keys come from it): set serve.encryption.keyring_file or serve.encryption.keyring_env"]


def test_domaintune_validate_reports_the_missing_keyring_and_bad_rules(tmp_path):
    from typer.testing import CliRunner

    from domaintune.cli import app

    (tmp_path / "rules.yaml").write_text(BAD)
    (tmp_path / "domaintune.yaml").write_text(f"""\
name: demo
model:
  base: {tmp_path / "model"}
serve:
  rules: {{file: rules.yaml, review_db: review.db}}
  encryption: {{keyring_file: keyring}}
""", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "domaintune.yaml")])
    out = " ".join(result.output.split())
    assert result.exit_code != 0, out
    assert "serve.encryption.keyring_file: file not found" in out
    assert "rules.3.keyword: unknown key (did you mean 'keywords'?)" in out
