"""`domaintune init FOLDER`: a folder of mixed formats becomes a commented config that validates."""

from __future__ import annotations

import json

import yaml
from tests.fixtures.messy import pdf_bytes, write_docx
from typer.testing import CliRunner

from domaintune.cli import app
from domaintune.data.survey import survey

GUIDE = ("Harbor Bank's HarborPay wallet sends money abroad through SWIFT in one working day. "
         "The fee for a HarborPay transfer is five dollars, and SWIFT charges of the receiving bank may apply. "
         "Customers can follow each HarborPay transfer in the app until the money has arrived.")
ZH = ("海港银行的跨境汇款一般在一个工作日内到账，手续费为每笔五美元，收款行可能另收费用。"
      "客户可以在手机银行里查询每一笔汇款的进度。")


def make_folder(root):
    docs = root / "docs"
    (docs / "web").mkdir(parents=True)
    (docs / "guide.txt").write_text(GUIDE + "\n", encoding="utf-8")
    (docs / "copy-of-guide.txt").write_text(GUIDE + "\n", encoding="utf-8")  # an exact duplicate
    (docs / "guide.md").write_text("# Sending money abroad\n\n" + GUIDE + "\n", encoding="utf-8")  # near
    (docs / "zh.txt").write_text(ZH + "\n", encoding="utf-8")
    (docs / "web" / "fees.html").write_text(
        "<html><body><nav>Home | Login</nav><main><h1>Fees</h1><p>Wire transfers with SWIFT cost 15 USD each, "
        "and the fee is shown before you confirm the transfer in the app.</p></main>"
        "<footer>© Harbor Bank</footer></body></html>", encoding="utf-8")
    (docs / "report.pdf").write_bytes(pdf_bytes("Annual report of Harbor Bank with audited figures"))
    write_docx(docs / "memo.docx", ["Internal memo on the HarborPay mortgage product.", "Rates are fixed."])
    rows = [{"id": f"t{i}", "body": f"Ticket {i}: the customer at li.wei{i}@example.com asked about the SWIFT fee "
             f"and can be called on 1380013800{i}.", "channel": "mail"} for i in range(3)]
    (docs / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    turns = [{"conversation_id": "c1", "turn": i, "speaker": s, "text": t} for i, (s, t) in enumerate(
        [("customer", "How long does a HarborPay transfer take?"), ("agent", "Usually one working day.")])]
    (docs / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in turns), encoding="utf-8")
    (docs / "image.bin").write_bytes(b"\x00\x01")
    return docs


def test_survey_sees_formats_languages_pii_and_duplicates(tmp_path):
    found = survey(make_folder(tmp_path))
    assert set(found.files_by_format) == {"txt", "md", "html", "pdf", "docx", "jsonl", "chat", ".bin"}
    assert {s.name: s.fmt for s in found.sources}["chat"] == "chat"
    tickets = next(s for s in found.sources if s.fmt == "jsonl")
    assert (tickets.text_field, tickets.id_field) == ("body", "id")
    assert [p.name for p in found.skipped] == ["image.bin"]
    assert dict(found.languages).keys() >= {"en", "zh"}
    assert found.pii["EMAIL"] == 3 and found.pii["PHONE"] == 3 and found.docs_with_pii == 3
    assert found.exact_duplicates == 1 and found.near_duplicates == 1
    assert found.terms["HarborPay"] >= 3 and found.terms["SWIFT"] >= 3


def test_init_writes_a_config_that_validates_and_runs(tmp_path):
    docs = make_folder(tmp_path)
    project = tmp_path / "project"
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(docs), "--out", str(project), "--model", "org/base-model"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for expected in ("likely personal data: EMAIL: 3, PHONE: 3", "likely duplicates: 1 exact, 1 near",
                     "no reader for 1 file(s): image.bin", "what to edit", "languages: en"):
        assert expected in out, expected

    config = project / "domaintune.yaml"
    text = config.read_text(encoding="utf-8")
    assert "# EDIT" in text and "org/base-model" in text
    raw = yaml.safe_load(text)
    assert raw["data"]["quality"]["languages"] == ["en", "zh"] and raw["data"]["pii"]["enabled"] is True
    formats = {s["name"]: s.get("format", "auto") for s in raw["data"]["sources"]}
    assert formats["chat"] == "chat" and {"txt", "md", "html", "pdf", "docx", "jsonl"} <= set(formats)
    assert '"SWIFT"' in (project / "rules.yaml").read_text(encoding="utf-8")  # a commented glossary candidate

    checked = runner.invoke(app, ["validate", str(config)])
    assert checked.exit_code == 0, checked.output
    prepared = runner.invoke(app, ["data", "prepare", str(config)])
    assert prepared.exit_code == 0, prepared.output
    assert (project / "runs" / raw["name"] / "data" / "domain" / "train.jsonl").exists()

    again = runner.invoke(app, ["init", str(docs), "--out", str(project)])
    assert again.exit_code != 0 and "--force" in again.output  # an edited config is never overwritten
