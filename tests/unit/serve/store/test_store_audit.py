"""The audit chain: tamper detection (named record), rotation, CLI verify/export, one record per request."""

from __future__ import annotations

import io
import json
import sqlite3

import openai
import pytest
from store_helpers import records_settings, write_keyring
from typer.testing import CliRunner

from domaintune.cli import app as cli
from domaintune.serve.hooks import AuditRecord
from domaintune.serve.store.audit import ChainAuditor
from domaintune.serve.store.crypto import Keyring, Vault, parse_keyring


def _auditor(tmp_path, kids=("k1",), content="none"):
    ring_file = tmp_path / "ring"
    if not ring_file.exists():
        write_keyring(ring_file, *kids)
    ring = Keyring(parse_keyring(ring_file.read_text(), "ring"))
    return ChainAuditor(tmp_path / "audit.sqlite", ring, Vault(ring, tmp_path / "keys.sqlite"), content), ring_file


def _fill(auditor, n=5):
    for i in range(n):
        auditor.record(AuditRecord(request_id=f"r{i}", route="/v1/chat/completions", principal="alice",
                                   tenant="t", status=200, prompt_text=f"question {i}", answer_text=f"answer {i}"))


def _sql(tmp_path, *statements):
    db = sqlite3.connect(tmp_path / "audit.sqlite")
    for stmt in statements:
        db.execute(stmt)
    db.commit()
    db.close()


def test_an_untouched_chain_verifies_and_queries_filter(tmp_path):
    auditor, _ = _auditor(tmp_path)
    _fill(auditor)
    auditor.record(AuditRecord(request_id="bad", route="/v1/completions", principal="bob", tenant="t", status=400,
                               key_id="kb"))
    assert auditor.verify() == {"ok": True, "records": 6, "first_bad": None, "reason": "",
                                "head": json.loads(_export(auditor)[-1])["mac"]}
    assert [r["request_id"] for r in auditor.query(status=400)] == ["bad"]
    assert [r["request_id"] for r in auditor.query(key_id="kb", route="/v1/completions")] == ["bad"]
    assert len(auditor.query(route="/v1/chat/completions", limit=3)) == 3
    assert auditor.query(since="2999-01-01T00:00:00+00:00") == []


@pytest.mark.parametrize(("tamper", "first_bad", "reason"), [
    (["UPDATE audit SET body = replace(body, '\"status\":200', '\"status\":201') WHERE seq = 3"], 3,
     "the mac does not match its contents"),
    (["DELETE FROM audit WHERE seq = 3"], 3, "record 3 is missing"),
    (["UPDATE audit SET seq = 100 WHERE seq = 2", "UPDATE audit SET seq = 2 WHERE seq = 3",
      "UPDATE audit SET seq = 3 WHERE seq = 100"], 2, "prev_mac does not match"),
    (["UPDATE audit SET content = x'00' || substr(content, 2) WHERE seq = 4"], 4, "its content does not match"),
])
def test_tampering_is_detected_at_the_first_bad_record(tmp_path, tamper, first_bad, reason):
    auditor, ring = _auditor(tmp_path, content="encrypted")
    _fill(auditor)
    _sql(tmp_path, *tamper)
    result = auditor.verify()
    assert result["ok"] is False and result["first_bad"] == first_bad and reason in result["reason"]
    assert result["records"] == first_bad - 1
    run = CliRunner().invoke(cli, ["audit", "verify", "--db", str(tmp_path / "audit.sqlite"), "--keyring", str(ring)])
    assert run.exit_code == 1 and f"BROKEN at record {first_bad}" in run.output


def test_a_flipped_byte_anywhere_in_a_body_is_detected(tmp_path):
    auditor, _ = _auditor(tmp_path)
    _fill(auditor, 3)
    db = sqlite3.connect(tmp_path / "audit.sqlite")
    body = db.execute("SELECT body FROM audit WHERE seq = 2").fetchone()[0]
    i = body.index("alice")
    db.execute("UPDATE audit SET body = ? WHERE seq = 2", (body[:i] + "b" + body[i + 1:],))
    db.commit()
    assert auditor.verify()["first_bad"] == 2


def test_rotation_keeps_old_records_verifiable_and_a_dropped_key_is_named(tmp_path):
    auditor, ring_file = _auditor(tmp_path)
    _fill(auditor, 2)
    old_line = ring_file.read_text()
    write_keyring(tmp_path / "new", "k2")
    ring_file.write_text(old_line + (tmp_path / "new").read_text())
    rotated, _ = _auditor(tmp_path)
    _fill(rotated, 2)
    assert rotated.verify()["ok"] and [r["seq"] for r in rotated.query()] == [4, 3, 2, 1]
    kids = [json.loads(line)["kid"] for line in _export(rotated)]
    assert kids == ["k1", "k1", "k2", "k2"]
    ring_file.write_text((tmp_path / "new").read_text())
    result = _auditor(tmp_path)[0].verify()
    assert result["first_bad"] == 1 and "'k1' is not in the keyring" in result["reason"]


def _export(auditor, with_content=False) -> list[str]:
    out = io.StringIO()
    auditor.export(out, with_content)
    return out.getvalue().splitlines()


def test_export_writes_jsonl_with_the_chain_fields_and_content_only_on_request(tmp_path):
    auditor, _ = _auditor(tmp_path, content="encrypted")
    _fill(auditor, 2)
    lines = [json.loads(line) for line in _export(auditor)]
    assert [(r["seq"], r["request_id"], r["status"]) for r in lines] == [(1, "r0", 200), (2, "r1", 200)]
    assert lines[1]["prev_mac"] == lines[0]["mac"] and "text" not in lines[0]
    assert "question 0" not in (tmp_path / "audit.sqlite-wal").read_bytes().decode("latin-1")
    full = [json.loads(line) for line in _export(auditor, with_content=True)]
    assert full[0]["text"] == {"prompt": "question 0", "answer": "answer 0"}


def test_redacted_content_masks_pii_before_sealing(tmp_path):
    ring = Keyring({"k1": b"k" * 32})
    from domaintune.config.data import PiiConfig
    from domaintune.governance.pii import Redactor

    auditor = ChainAuditor(tmp_path / "a.sqlite", ring, Vault(ring, tmp_path / "k.sqlite"), "redacted",
                           Redactor.from_config(PiiConfig(), key="serve.audit.pii"))
    auditor.record(AuditRecord(request_id="r", route="/x", principal="p", tenant="t", status=200,
                               prompt_text="mail me at jane.doe@example.com", answer_text="ok"))
    out = io.StringIO()
    auditor.export(out, with_content=True)
    assert json.loads(out.getvalue())["text"]["prompt"] == "mail me at <EMAIL>"


# --------------------------------------------------------------------------- through the real server
def test_one_record_per_request_through_the_server_failures_included(start_server, loaded, tmp_path):
    server = start_server(loaded, **records_settings(tmp_path))
    client = server.client()
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    client.completions.create(model="tiny", prompt="abc", max_tokens=2)
    list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "s"}], max_tokens=2,
                                        stream=True))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=9)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    audit = server.app.state.audit
    rows = list(reversed(audit.query()))
    assert [(r["route"], r["status"]) for r in rows] == [
        ("/v1/chat/completions", 200), ("/v1/completions", 200), ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 400), ("/v1/chat/completions", 404)]
    assert rows[0]["prompt_tokens"] > 0 and rows[0]["completion_tokens"] == 3 and rows[3]["error_code"]
    assert audit.verify()["ok"] and audit.verify()["records"] == 5
    text = json.loads(_export(audit, with_content=True)[0])["text"]
    assert json.loads(text["prompt"]) == [{"role": "user", "content": "hi"}] and isinstance(text["answer"], str)
