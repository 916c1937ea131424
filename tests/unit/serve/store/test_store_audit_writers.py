"""Several writers on one audit chain: a CLI command appending while the server appends, and the key
commands (`domaintune keys create|revoke CFG`) recorded in the server's chain, never with the token."""

from __future__ import annotations

import multiprocessing

from store_helpers import write_keyring

from domaintune.serve.hooks import AuditRecord
from domaintune.serve.store.audit import ChainAuditor
from domaintune.serve.store.crypto import Keyring, parse_keyring
from fixtures.cli import invoke


def _ring(path) -> Keyring:
    return Keyring(parse_keyring(path.read_text(), str(path)))


def _append(db: str, ring_path: str, who: str, n: int, start) -> None:
    import time
    from pathlib import Path

    auditor = ChainAuditor(db, _ring(Path(ring_path)))
    start.wait(60)  # both writers begin together, and pause between records, so their appends interleave
    for i in range(n):
        auditor.record(AuditRecord(request_id=f"{who}-{i}", route=who, principal=who, tenant="default", status=200))
        time.sleep(0.002)
    auditor.close()


def test_two_processes_appending_at_once_keep_one_linear_chain(tmp_path):
    ring = write_keyring(tmp_path / "ring", "k1")
    db = str(tmp_path / "audit.sqlite")
    ChainAuditor(db, _ring(ring)).close()  # the file exists: both writers open the same database
    fork = multiprocessing.get_context("fork")
    start = fork.Barrier(2)
    writers = [fork.Process(target=_append, args=(db, str(ring), who, 60, start)) for who in ("server", "cli")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    auditor = ChainAuditor(db, _ring(ring))
    assert auditor.verify() == {**auditor.verify(), "ok": True, "records": 120}
    routes = [r["route"] for r in reversed(auditor.query(limit=200))]
    assert routes.count("server") == routes.count("cli") == 60
    assert len(set(routes[:60])) == 2 or len(set(routes[60:])) == 2  # they did interleave, whole records each


def test_key_commands_are_recorded_in_the_servers_chain(tmp_path):
    ring = write_keyring(tmp_path / "ring", "k1")
    cfg = tmp_path / "domaintune.yaml"
    cfg.write_text(f"""\
name: demo
model:
  base: {tmp_path / "model"}
serve:
  auth: {{db: keys.db, secret_file: server.secret}}
  encryption: {{keyring_file: {ring}, user_keys_db: user-keys.sqlite}}
  audit: {{enabled: true, db: audit.sqlite}}
""", encoding="utf-8")
    out = invoke("keys", "create", str(cfg), "--name", "teller", "--role", "user").output
    key_id = out.split("key id: ")[1].split()[0]
    token = out.split("store it now): ")[1].split()[0]
    invoke("keys", "revoke", key_id, str(cfg))
    auditor = ChainAuditor(tmp_path / "audit.sqlite", _ring(ring))
    rows = list(reversed(auditor.query()))
    assert [(r["route"], r["detail"]["key"]) for r in rows] == [("cli:keys create", key_id),
                                                                 ("cli:keys revoke", key_id)]
    assert rows[0]["detail"]["role"] == "user" and rows[0]["principal"].startswith("cli:")
    assert auditor.verify()["ok"]
    assert token.encode() not in (tmp_path / "audit.sqlite").read_bytes()
    (tmp_path / "ring").unlink()  # no keyring: the change is refused, not made unaudited
    refused = invoke("keys", "create", str(cfg), "--name", "x", code=2).output
    assert "keyring_file: file not found" in refused
    assert len(invoke("keys", "list", str(cfg)).output.strip().splitlines()) == 1
