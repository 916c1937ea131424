from __future__ import annotations

import json

import pytest

from domaintune.artifacts import RunDir
from domaintune.data import inputs, run
from domaintune.errors import DataError
from domaintune.pipeline import StageSpec, run_stage

REASONS = {"bad_json", "not_an_object", "invalid_utf8", "missing_text_field", "too_short",
           "duplicate_id", "exact_duplicate"}


@pytest.fixture
def corpus(tmp_path, write_jsonl, make_docs):
    """An english folder (jsonl with one bad line of each kind + a markdown file) and a csv."""
    en = tmp_path / "raw" / "en"
    write_jsonl(en / "a.jsonl", [{"id": f"a{i}", **d} for i, d in enumerate(make_docs(30, "a"))])
    bad = (b'{"id": "b1", "text": "a perfectly fine document in b"}\n'
           b'["not", "an", "object"]\n'
           b'{"id": "b2", "text": "caf\xe9 latin-1 bytes in the middle"}\n'
           b'{"id": "b3", "text": "   "}\n'
           b'{"id": "a0", "text": "reuses an id from a.jsonl, text differs"}\n'
           b'{"id": "b4", "text": "a 0: some   ordinary text long enough to keep"}\n'
           b'{"id": "b5", "body": "wrong field name"}\n'
           b'{"id": "b6", "text": "truncat')
    (en / "b.jsonl").write_bytes(bad)
    (en / "notes.md").write_text("# Ｎｏｔｅｓ\n\n\n\nFull-width ＡＢＣ１２３ text.\n", encoding="utf-8")
    csv_rows = "".join(f'f{i},"finance row {i}, with a comma and enough text"\n' for i in range(12))
    (tmp_path / "raw" / "fin.csv").write_text("id,text\n" + csv_rows, encoding="utf-8")
    return [{"path": "raw/en", "stream": "english", "id_field": "id"},
            {"path": "raw/*.csv", "stream": "finance", "id_field": "id", "name": "fin"}]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_end_to_end_outputs(tmp_path, corpus, make_config):
    cfg = make_config(corpus, max_reject_fraction=0.5)
    result = run(cfg, RunDir(tmp_path / "run"))
    out = tmp_path / "run" / "data"
    assert result.outputs == {"streams": "streams.json", "rejects": "rejects.jsonl",
                              "stats": "stats.json", "lineage": "lineage.jsonl",
                              "report": "data_report.html"}
    streams = json.loads((out / "streams.json").read_text())
    assert list(streams) == ["english", "finance"]
    assert streams["english"]["docs"] == {"train": 26, "val": 3, "test": 3}  # 30 a + b1 + notes.md
    assert streams["finance"]["docs"] == {"train": 10, "val": 1, "test": 1}
    for entry in streams.values():
        rows = [r for s in ("train", "val", "test") for r in read_jsonl(out / entry[s])]
        assert len(rows) == sum(entry["docs"].values())
        assert entry["chars"] == sum(len(r["text"]) for r in rows)

    english = read_jsonl(out / "english" / "train.jsonl") + read_jsonl(out / "english" / "val.jsonl")
    english += read_jsonl(out / "english" / "test.jsonl")
    notes = next(r for r in english if r["source"]["path"].endswith("notes.md"))
    assert notes["text"] == "# Notes\n\nFull-width ABC123 text."
    assert notes["steps"] == ["normalize.unicode", "normalize.whitespace"]
    assert notes["id"] == "en:notes.md" and notes["source"]["line"] is None
    assert set(notes) == {"id", "text", "stream", "source", "steps", "meta"}

    rejects = read_jsonl(out / "rejects.jsonl")
    assert {r["reason"] for r in rejects} == REASONS
    dup = next(r for r in rejects if r["reason"] == "exact_duplicate")
    assert "'a0'" in dup["detail"] and dup["line"] == 6
    assert all(set(r) == {"file", "line", "reason", "detail", "source", "excerpt"} for r in rejects)

    stats = json.loads((out / "stats.json").read_text())
    total = stats["total"]
    assert total["records"] == total["kept"] + total["rejected"] + total["duplicates"]
    assert (total["kept"], total["rejected"], total["duplicates"]) == (44, 6, 1)
    assert stats["sources"][1]["name"] == "fin" and stats["streams"]["finance"]["docs"]["val"] == 1
    assert result.metrics["kept"] == 44
    assert result.summary == "44 docs kept in 2 streams, 6 rejected, 1 duplicates"


def test_same_input_and_seed_give_identical_bytes(tmp_path, corpus, make_config):
    cfg = make_config(corpus, max_reject_fraction=0.5)
    run(cfg, RunDir(tmp_path / "r1"))
    run(cfg, RunDir(tmp_path / "r2"))
    # shards/ holds intermediate files (with datatrove's timings); everything else is the output
    files = sorted(p.relative_to(tmp_path / "r1") for p in (tmp_path / "r1").rglob("*")
                   if p.is_file() and "shards" not in p.parts)
    assert len(files) == 12
    for rel in files:
        assert (tmp_path / "r1" / rel).read_bytes() == (tmp_path / "r2" / rel).read_bytes(), rel

    run(make_config(corpus, seed=7, max_reject_fraction=0.5), RunDir(tmp_path / "r3"))
    val = "data/english/val.jsonl"
    assert (tmp_path / "r1" / val).read_bytes() != (tmp_path / "r3" / val).read_bytes()


def test_too_many_rejects_raise_with_counts(tmp_path, corpus, make_config):
    cfg = make_config(corpus, max_reject_fraction=0.05)
    with pytest.raises(DataError) as err:
        run(cfg, RunDir(tmp_path / "run"))
    msg = str(err.value)
    assert "6 of 51 records" in msg and "bad_json: 1" in msg and "exact_duplicate" not in msg
    assert str(tmp_path / "run" / "data" / "rejects.jsonl") in msg
    assert (tmp_path / "run" / "data" / "rejects.jsonl").exists()
    assert not (tmp_path / "run" / "data" / "streams.json").exists()


def test_exact_duplicates_do_not_count_toward_reject_fraction(tmp_path, write_jsonl, make_docs,
                                                              make_config):
    rows = make_docs(10) * 3  # two of every three records are duplicates
    write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = make_config([{"path": "d.jsonl", "stream": "s"}], max_reject_fraction=0.0)
    result = run(cfg, RunDir(tmp_path / "run"))
    assert result.metrics["duplicates"] == 20 and result.metrics["kept"] == 10


def test_exact_dedup_can_be_turned_off(tmp_path, write_jsonl, make_docs, make_config):
    write_jsonl(tmp_path / "d.jsonl", make_docs(5) * 2)
    # near-dedup would catch the identical copies too: off as well
    cfg = make_config([{"path": "d.jsonl", "stream": "s"}], exact_dedup=False,
                      near_dedup={"enabled": False})
    assert run(cfg, RunDir(tmp_path / "run")).metrics["kept"] == 10


def test_missing_path_names_the_key(tmp_path, make_config, write_jsonl, make_docs):
    write_jsonl(tmp_path / "d.jsonl", make_docs(5))
    cfg = make_config([{"path": "d.jsonl", "stream": "s"}, {"path": "missing/", "stream": "s"}])
    for call in (lambda: inputs(cfg), lambda: run(cfg, RunDir(tmp_path / "run"))):
        with pytest.raises(DataError, match=r"data\.sources\[1\]\.path: '.*missing' matches no"):
            call()


def test_stream_without_train_docs_is_an_error(tmp_path, write_jsonl, make_docs, make_config):
    write_jsonl(tmp_path / "good.jsonl", make_docs(5))
    write_jsonl(tmp_path / "short.jsonl", [{"text": "tiny"}])
    cfg = make_config([{"path": "good.jsonl", "stream": "good"},
                       {"path": "short.jsonl", "stream": "tiny"}], max_reject_fraction=1.0)
    with pytest.raises(DataError, match=r"stream 'tiny' \(data.sources\[1\]\) has 0 train"):
        run(cfg, RunDir(tmp_path / "run"))


def test_inputs_lists_every_file_sorted(tmp_path, corpus, make_config):
    files = inputs(make_config(corpus))
    assert [f.removeprefix(str(tmp_path)) for f in files] == [
        "/raw/en/a.jsonl", "/raw/en/b.jsonl", "/raw/en/notes.md", "/raw/fin.csv"]


def test_runs_under_the_pipeline_runner(tmp_path, corpus, make_config):
    cfg = make_config(corpus, max_reject_fraction=0.5)
    spec = StageSpec("data", "domaintune.data", ("data", "seed"))
    run_dir = RunDir(cfg.run_path)
    assert run_stage(spec, cfg, run_dir).status == "ran"
    assert run_dir.manifest("data")["metrics"]["kept"] == 44
    assert run_stage(spec, cfg, run_dir).status == "skipped"
