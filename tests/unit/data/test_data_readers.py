from __future__ import annotations

import json

import pytest

from domaintune.data.readers import detect_format, read_file
from domaintune.data.records import Record, Reject


def read(path, ctx):
    return list(read_file(path, ctx))


def test_jsonl_records_keep_ids_meta_and_lineage(tmp_path, make_ctx, write_jsonl):
    path = write_jsonl(tmp_path / "sub" / "a.jsonl", [
        {"id": "x1", "text": "hello", "lang": "en"},
        {"text": "no id here"},
    ])
    first, second = read(path, make_ctx(id_field="id"))
    assert first == Record("x1", "hello", "s", "src", str(path), 1, [], {"lang": "en"})
    # no id value: a stable id from the source label, the path under the root, and the line
    assert second.id == "src:sub/a.jsonl:2" and second.line == 2


def test_jsonl_without_id_field_keeps_row_id_in_meta(tmp_path, make_ctx, write_jsonl):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": 7, "text": "t"}])
    (rec,) = read(path, make_ctx())
    assert rec.id == "src:a.jsonl:1" and rec.meta == {"id": 7}


def test_jsonl_numeric_id_and_blank_lines(tmp_path, make_ctx):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 3, "text": "a"}\n\n   \n{"id": 4, "text": "b"}\n')
    recs = read(path, make_ctx(id_field="id"))
    assert [(r.id, r.line) for r in recs] == [("3", 1), ("4", 4)]


def test_jsonl_bad_lines_become_rejects(tmp_path, make_ctx):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "good"}\n'
                     b'[1, 2]\n'
                     b'{"text": "caf\xe9"}\n'
                     b'{"body": "wrong field"}\n'
                     b'{"text": 5}\n'
                     b'{"text": "lone \\udc80 surrogate"}\n'
                     b'{"text": "emoji \\ud83d\\ude00 pair"}\n'
                     b'{"text": "trunc')
    items = read(path, make_ctx())
    got = [(i.line, i.reason if isinstance(i, Reject) else "ok") for i in items]
    assert got == [(1, "ok"), (2, "not_an_object"), (3, "invalid_utf8"),
                   (4, "missing_text_field"), (5, "missing_text_field"), (6, "invalid_utf8"),
                   (7, "ok"), (8, "bad_json")]
    assert items[6].text == "emoji \U0001F600 pair"
    missing = items[3]
    assert "'text'" in missing.detail and "set text_field in data.sources[0]" in missing.detail
    assert "is int" in items[4].detail
    assert "truncated" in items[7].detail and items[7].excerpt == '{"text": "trunc'
    assert "0xe9" in items[2].detail and items[2].excerpt == '{"text": "caf\ufffd"}'
    assert all(i.file == str(path) and i.source == "src" for i in items if isinstance(i, Reject))


@pytest.mark.parametrize("name", ["doc.txt", "doc.md"])
def test_text_files_are_one_document(tmp_path, make_ctx, name):
    path = tmp_path / name
    path.write_text("line one\nline two\n", encoding="utf-8")
    (rec,) = read(path, make_ctx())
    assert rec.text == "line one\nline two\n" and rec.line is None and rec.id == f"src:{name}"


def test_text_file_with_bad_bytes_is_rejected_naming_the_line(tmp_path, make_ctx):
    path = tmp_path / "doc.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff here\n")
    (rej,) = read(path, make_ctx())
    assert rej.reason == "invalid_utf8" and rej.detail.startswith("line 3,")


def test_csv_header_text_and_id_columns(tmp_path, make_ctx):
    path = tmp_path / "t.csv"
    path.write_text('key,body,tag\nk1,"multi\nline, with comma",a\nk2,plain,b\n', encoding="utf-8")
    first, second = read(path, make_ctx(text_field="body", id_field="key"))
    assert (first.id, first.text, first.line, first.meta) == ("k1", "multi\nline, with comma", 2,
                                                             {"tag": "a"})
    assert (second.id, second.line) == ("k2", 4)  # line where the row starts


def test_csv_bad_rows_become_rejects(tmp_path, make_ctx):
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,tag\nok text,a\ntoo,many,cells\nbad \xe9 byte,b\n")
    items = read(path, make_ctx())
    assert [getattr(i, "reason", "ok") for i in items] == ["ok", "bad_csv", "invalid_utf8"]
    assert "3 fields but the header has 2" in items[1].detail


def test_csv_without_text_column_names_the_fix(tmp_path, make_ctx):
    path = tmp_path / "t.csv"
    path.write_text("body\nsome text\n", encoding="utf-8")
    (rej,) = read(path, make_ctx())
    assert rej.reason == "missing_text_field" and "row fields: body" in rej.detail


def test_auto_format_by_extension_and_unknown_extension(tmp_path, make_ctx):
    assert detect_format(tmp_path / "a.JSONL", "auto") == "jsonl"
    assert detect_format(tmp_path / "a.data", "jsonl") == "jsonl"
    path = tmp_path / "a.xyz"
    path.write_bytes(b"%PDF")
    (rej,) = read(path, make_ctx())
    assert rej.reason == "unsupported_format" and "set format in data.sources[0]" in rej.detail


def test_explicit_format_overrides_extension(tmp_path, make_ctx):
    path = tmp_path / "rows.data"
    path.write_text(json.dumps({"text": "x"}) + "\n", encoding="utf-8")
    (rec,) = read(path, make_ctx(fmt="jsonl"))
    assert rec.text == "x"


def test_every_configurable_format_has_a_registered_reader_that_loads():
    from typing import get_args

    from domaintune.config import SourceConfig
    from domaintune.data.readers import EXTENSIONS, READERS
    from domaintune.errors import ConfigError

    formats = set(get_args(SourceConfig.model_fields["format"].annotation)) - {"auto"}
    assert set(READERS.names()) == formats and set(EXTENSIONS.values()) <= formats
    assert all(callable(READERS.get(name)) for name in READERS.names())
    with pytest.raises(ConfigError, match="did you mean 'jsonl'"):
        READERS.get("jsonll")
