"""`domaintune data prepare` on a folder of every format plus broken files: exit 0, splits,
rejects with file/line/reason, report, and `data trace` / `data report` on the result."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from domaintune.cli import app
from fixtures.messy import EXPECTED_REASONS, MESSY_SOURCES, make_messy_folder


@pytest.fixture
def messy_config(tmp_path, make_config):
    make_messy_folder(tmp_path)

    def make(**data):
        make_config(MESSY_SOURCES, max_record_bytes=2048, **data)
        return tmp_path / "domaintune.yaml"
    return make


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_messy_folder_prepares_with_rejects_report_and_trace(tmp_path, messy_config):
    config = messy_config(max_reject_fraction=0.5)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "prepare", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "t" / "data"
    streams = json.loads((out / "streams.json").read_text())
    assert set(streams) == {"docs", "chat"} and streams["chat"]["docs"]["train"] >= 1
    kept = {r["id"]: r for s in ("docs", "chat") for split in ("train", "val", "test")
            for r in _read(out / s / f"{split}.jsonl")}
    for doc_id in ("docs:page.html", "docs:report.pdf", "docs:memo.docx", "docs:gbk.txt", "pq0", "r1", "j0",
                   "chat:support.csv#c1", "chat:support.jsonl#k1"):
        assert doc_id in kept, doc_id
    assert kept["docs:gbk.txt"]["steps"][0].startswith("decode.")
    assert kept["docs:page.html"]["source"]["path"].endswith("page.html")

    rejects = _read(out / "rejects.jsonl")
    assert {r["reason"] for r in rejects} == EXPECTED_REASONS
    truncated = next(r for r in rejects if r["reason"] == "bad_json")
    assert truncated["file"].endswith("rows.jsonl") and truncated["line"] == 30
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"]["rejected"] == len(rejects)

    page = (out / "data_report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 2 and "unreadable_pdf" in page
    report = json.loads((out / "data_report.json").read_text())
    assert report["example_rejects"]["not_an_object"][0]["line"] == 25
    assert all(src["approx_tokens"] > 0 for src in report["sources"])
    assert report["tokens_by_stream"]["chat"] > 0

    traced = runner.invoke(app, ["data", "trace", str(config), "docs:page.html"])
    assert traced.exit_code == 0, traced.output
    # main-content extraction already writes one clean line per block: no later step changes this page
    assert "Wire transfers cost 15 USD" in traced.output and "reader: extract.html.main" in traced.output
    assert "kept in stream 'docs'" in traced.output
    traced = runner.invoke(app, ["data", "trace", str(config), "docs:guide.md"])
    assert traced.exit_code == 0 and "normalize.whitespace" in traced.output, traced.output
    rerendered = runner.invoke(app, ["data", "report", str(config)])
    assert rerendered.exit_code == 0 and (out / "data_report.html").read_text() == page


def test_old_spelling_and_reject_threshold(tmp_path, messy_config):
    config = messy_config(max_reject_fraction=0.1)
    result = CliRunner().invoke(app, ["data", str(config)])  # `domaintune data CONFIG` = prepare
    assert result.exit_code != 0
    assert "more than data.max_reject_fraction=0.1" in " ".join(result.output.split())
    assert (tmp_path / "runs" / "t" / "data" / "rejects.jsonl").exists()
    assert (tmp_path / "runs" / "t" / "data" / "data_report.html").exists()  # written before the check
