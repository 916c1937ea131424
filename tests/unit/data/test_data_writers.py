from __future__ import annotations

import pytest

from domaintune.data.writers import JsonlWriter


def test_writes_utf8_lines_and_renames_on_success(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    with JsonlWriter(path) as w:
        w.write({"text": "中文 ok"})
        w.write([1])
    assert path.read_bytes() == '{"text": "中文 ok"}\n[1]\n'.encode()
    assert w.count == 2 and [p.name for p in path.parent.iterdir()] == ["out.jsonl"]


def test_failure_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), JsonlWriter(path) as w:
        w.write({"a": 1})
        raise RuntimeError("boom")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
