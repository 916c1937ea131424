from __future__ import annotations

import json

import pytest

from domaintune.artifacts import RunDir
from domaintune.data import run
from domaintune.data.stage import trace_record
from domaintune.errors import DataError


@pytest.fixture
def traced_run(tmp_path, write_jsonl, make_config):
    base = "Ｆｕｌｌ width   text about the mortgage product and its fixed rate for five whole years " * 3
    write_jsonl(tmp_path / "a.jsonl", [
        {"id": "x", "text": base},
        {"id": "y", "text": base.replace("five", "nine", 1)},  # near-duplicate of x, same length
        {"id": "z", "text": "tiny"},
        {"id": "w", "text": base},  # exact duplicate of x
    ])
    cfg = make_config([{"path": "a.jsonl", "stream": "s", "id_field": "id"}], max_reject_fraction=1.0,
                      near_dedup={"threshold": 0.5}, quality={"max_repeated_ngrams": None})
    run_dir = RunDir(tmp_path / "run")
    run(cfg, run_dir)
    return cfg, run_dir


def test_trace_shows_original_each_change_and_split(traced_run):
    cfg, run_dir = traced_run
    result = trace_record(cfg, run_dir, "x")
    assert result["original"].startswith("Ｆｕｌｌ width   text")
    assert [c["step"] for c in result["changes"]] == ["normalize.unicode", "normalize.whitespace"]
    assert "+Full width   text" in result["changes"][0]["diff"]
    assert result["source_unchanged"] and result["replay_matches"]
    entry = result["entry"]
    assert entry["outcome"] == "kept" and entry["split"] in ("train", "val", "test") and entry["line"] == 1
    assert entry["near_duplicates"] == 1


def test_trace_of_dropped_records_names_reason_and_keeper(traced_run):
    cfg, run_dir = traced_run
    near = trace_record(cfg, run_dir, "y")["entry"]
    assert (near["outcome"], near["reason"], near["duplicate_of"]) == ("duplicate", "near_duplicate", "x")
    exact = trace_record(cfg, run_dir, "w")["entry"]
    assert exact["reason"] == "exact_duplicate" and exact["step"] == "dedup.exact" and "'x'" in exact["detail"]
    short = trace_record(cfg, run_dir, "z")
    assert short["entry"]["step"] == "filter.min_chars"
    assert short["changes"][-1]["rejected"] == "too_short"


def test_trace_unknown_id_and_changed_source(traced_run, tmp_path):
    cfg, run_dir = traced_run
    with pytest.raises(DataError, match="'nope' is not in"):
        trace_record(cfg, run_dir, "nope")
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    rows[0]["text"] = "edited after the run, still long enough"
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert trace_record(cfg, run_dir, "x")["source_unchanged"] is False
