from __future__ import annotations

import json

from domaintune.data.chat import read_chat
from domaintune.data.readers import read_file
from domaintune.data.records import Record, Reject
from fixtures.messy import pdf_bytes, write_chat, write_docx, write_parquet


def read(path, ctx):
    return list(read_file(path, ctx))


def test_html_drops_scripts_and_keeps_blocks_apart(tmp_path, make_ctx):
    path = tmp_path / "p.html"
    path.write_text("<html><head><script>alert(1)</script><style>p{}</style></head><body><h1>Title</h1>"
                    "<p>First para.</p><!-- hidden --><ul><li>one</li><li>two</li></ul></body></html>")
    (rec,) = read(path, make_ctx())
    assert rec.text.split() == ["Title", "First", "para.", "one", "two"]
    assert "First para.\n" in rec.text and "alert" not in rec.text and "hidden" not in rec.text
    assert rec.steps == ["extract.html.main"] and rec.id == "src:p.html"


def test_pdf_text_layer_and_corrupt_pdf(tmp_path, make_ctx):
    good, bad = tmp_path / "a.pdf", tmp_path / "b.pdf"
    good.write_bytes(pdf_bytes("Quarterly results of the bank"))
    bad.write_bytes(b"%PDF-1.4\n\x00garbage")
    (rec,) = read(good, make_ctx())
    assert rec.text == "Quarterly results of the bank" and rec.steps == ["extract.pdf"]
    (rej,) = read(bad, make_ctx())
    assert rej.reason == "unreadable_pdf" and rej.file == str(bad) and "re-export" in rej.detail


def test_docx_paragraphs_and_tables_and_broken_docx(tmp_path, make_ctx):
    write_docx(tmp_path / "m.docx", ["First paragraph.", "Second paragraph."])
    (rec,) = read(tmp_path / "m.docx", make_ctx())
    assert rec.text == "First paragraph.\nSecond paragraph.\nfee\t2.50 USD"
    (tmp_path / "x.docx").write_bytes(b"PK\x03\x04 truncated")
    assert read(tmp_path / "x.docx", make_ctx())[0].reason == "unreadable_docx"


def test_parquet_rows_with_row_numbers_and_field_mapping(tmp_path, make_ctx):
    write_parquet(tmp_path / "t.parquet")
    recs = read(tmp_path / "t.parquet", make_ctx(id_field="id"))
    assert [(r.id, r.line, r.meta) for r in recs[:2]] == [("pq0", 1, {"n": 0}), ("pq1", 2, {"n": 1})]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nope")
    assert read(tmp_path / "bad.parquet", make_ctx())[0].reason == "unreadable_parquet"


def test_encoding_strict_by_default_and_detected_on_request(tmp_path, make_ctx):
    path = tmp_path / "gbk.txt"
    text = "海港银行的储蓄账户利率说明,适用于所有个人客户。"
    path.write_bytes(text.encode("gbk"))
    assert read(path, make_ctx())[0].reason == "invalid_utf8"
    (rec,) = read(path, make_ctx(encoding="auto"))
    assert rec.text == text and rec.steps[0].startswith("decode.")
    (rec,) = read(path, make_ctx(encoding="gbk"))
    assert rec.text == text and rec.steps == ["decode.gbk"]
    assert read(path, make_ctx(encoding="no-such-codec"))[0].reason == "bad_encoding"


def test_huge_lines_and_files_are_quarantined(tmp_path, make_ctx):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": "x" * 5000}) + "\n" + json.dumps({"text": "small"}) + "\n")
    big, small = read(path, make_ctx(max_record_bytes=1024))
    assert big.reason == "too_large" and big.line == 1 and "max_record_bytes" in big.detail
    assert small.text == "small"
    (tmp_path / "big.txt").write_text("y" * 5000)
    assert read(tmp_path / "big.txt", make_ctx(max_record_bytes=1024))[0].reason == "too_large"


def test_chat_turns_grouped_and_ordered_per_conversation(tmp_path, make_ctx):
    write_chat(tmp_path / "chat")
    items = list(read_chat(tmp_path / "chat" / "support.csv", make_ctx(fmt="chat")))
    assert [i.id for i in items] == ["src:chat/support.csv#c1", "src:chat/support.csv#c2"]
    first = items[0]
    assert first.text.splitlines()[0].startswith("customer: My card was blocked")  # turn 1 first
    assert first.meta == {"conversation": "c1", "turns": 2, "speakers": ["agent", "customer"]}
    assert first.line == 2
    mixed = list(read_chat(tmp_path / "chat" / "support.jsonl", make_ctx(fmt="chat")))
    assert isinstance(mixed[0], Reject) and mixed[0].reason == "missing_text_field" and mixed[0].line == 3
    assert isinstance(mixed[1], Record) and mixed[1].meta["turns"] == 2


def test_chat_rows_without_conversation_are_rejected(tmp_path, make_ctx):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"speaker": "a", "text": "hello there"}) + "\n")
    (rej,) = read_chat(path, make_ctx(fmt="chat"))
    assert rej.reason == "missing_conversation_field" and "conversation_field" in rej.detail
