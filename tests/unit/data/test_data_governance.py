"""Rules, quality filters and PII redaction through the whole data stage."""

from __future__ import annotations

import json

import yaml

from domaintune.artifacts import RunDir
from domaintune.checks import check_files
from domaintune.data import inputs, run
from domaintune.governance.pii import cn_id_check_char

VALID_ID = "11010519491231002" + cn_id_check_char("11010519491231002")
CARD = "4111 1111 1111 1111"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_governed_stage(tmp_path, write_jsonl, make_docs, make_config):
    rows = [{"id": f"d{i}", **d} for i, d in enumerate(make_docs(20))]
    rows += [
        {"id": "p1", "text": f"Customer Alice Grant (alice.grant@mail.example) paid with card {CARD} via T+0."},
        {"id": "p2", "text": f"客户王丽的身份证号{VALID_ID}，手机13812345678，FX业务已办理。"},
        {"id": "p3", "text": "Order lookalike: order no. 4111111111111111 and id 110105194912310021 shipped."},
        {"id": "q1", "text": "$$$ ### %%% @@@ !!! ^^^ &&& *** ~~~ === it is ok"},
        {"id": "q2", "text": "Der Kunde kann das Konto jederzeit in der Filiale schließen."},
    ]
    write_jsonl(tmp_path / "raw" / "docs.jsonl", rows)
    (tmp_path / "names.txt").write_text("Alice Grant\n王丽\n", encoding="utf-8")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({
        "glossary": ["T+0"], "rewrites": [{"pattern": r"FX", "replace": "外汇", "lang": "zh"},
                                          {"pattern": r"\+", "replace": " plus "}]}), encoding="utf-8")
    cfg = make_config([{"path": "raw", "stream": "s", "id_field": "id"}], max_reject_fraction=0.5,
                      rules_file="rules.yaml", quality={"languages": ["en", "zh"]},
                      pii={"enabled": True, "dictionaries": {"CUSTOMER_NAME": "names.txt"}})
    assert str(tmp_path / "rules.yaml") in inputs(cfg) and str(tmp_path / "names.txt") in inputs(cfg)
    run(cfg, RunDir(tmp_path / "run"))
    out = tmp_path / "run" / "data"

    kept = {r["id"]: r for s in ("train", "val", "test") for r in read_jsonl(out / "s" / f"{s}.jsonl")}
    assert kept["p1"]["text"] == ("Customer <CUSTOMER_NAME> (<EMAIL>) paid with card <BANK_CARD> via T+0.")
    # NFKC (on by default) folds the full-width commas; data.normalize.width=full would restore them
    assert kept["p2"]["text"] == "客户<CUSTOMER_NAME>的身份证号<ID_CARD>,手机<PHONE>,外汇业务已办理。"
    assert kept["p2"]["steps"] == ["normalize.unicode", "rules.rewrite", "pii.redact"]
    assert kept["p1"]["meta"]["pii_redacted"] == {"BANK_CARD": 1, "CUSTOMER_NAME": 1, "EMAIL": 1}
    assert "pii_redacted" not in kept["p3"]["meta"]  # invalid checksums / order-number context

    stats = json.loads((out / "stats.json").read_text())
    total = stats["total"]
    assert total["pii_by_type"] == {"BANK_CARD": 1, "CUSTOMER_NAME": 2, "EMAIL": 1, "ID_CARD": 1, "PHONE": 1}
    assert total["rejected_by_reason"] == {"quality.symbol_ratio": 1, "quality.language": 1}
    assert stats["sources"][0]["pii_by_type"] == total["pii_by_type"]

    # every text output (the shards' MinHash signatures are numbers: .npy)
    everything = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file() and p.suffix != ".npy")
    for raw in ("alice.grant@mail.example", "Alice Grant", CARD, VALID_ID, "13812345678", "王丽"):
        assert raw not in everything


def test_validate_reports_missing_governance_files(tmp_path, write_jsonl, make_docs, make_config):
    write_jsonl(tmp_path / "raw" / "a.jsonl", make_docs(3))
    cfg = make_config([{"path": "raw", "stream": "s"}], rules_file="nope.yaml",
                      pii={"enabled": True, "dictionaries": {"NAMES": "names.txt"}})
    problems = check_files(cfg)
    assert any(p.startswith("data.rules_file: file not found") and "nope.yaml" in p for p in problems)
    assert any(p.startswith("data.pii.dictionaries.NAMES: file not found") for p in problems)
