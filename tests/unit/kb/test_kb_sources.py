"""Where documents and their ACL labels come from; the kb: config section; the CLI."""

from __future__ import annotations

import json

import pytest
import yaml
from kb_helpers import load, write_run
from pydantic import ValidationError

from domaintune.artifacts import RunDir
from domaintune.config.kb import KBConfig
from domaintune.errors import ConfigError, DataError, StageError
from domaintune.kb.acl import access_of
from domaintune.kb.sources import read_documents

DOCS = [{"id": "a", "text": "Alpha\n\nfirst", "meta": {"acl": ["group:x"], "title": "The A"}},
        {"id": "b", "text": "Beta\n\nsecond", "meta": {"acl": "group:y, user:bo"}},
        {"id": "c", "text": "Gamma\n\nthird"}]


def _docs(tmp_path, source, docs=DOCS):
    cfg = load(write_run(tmp_path, docs, kb={"sources": [source]}))
    return {d.id: d for d in read_documents(cfg.kb, RunDir(cfg.run_path))}


def test_labels_from_source_field_and_sidecar_in_that_order_of_precedence(tmp_path):
    docs = _docs(tmp_path, {"stream": "docs", "acl": ["public"], "acl_field": "meta.acl", "title_field": "meta.title"})
    assert docs["a"].labels == {"group:x"} and docs["b"].labels == {"group:y", "user:bo"}
    assert docs["c"].labels == {"public"} and docs["a"].title == "The A" and docs["c"].title == "Gamma"
    (tmp_path / "acl.yaml").write_text(yaml.safe_dump({"a": ["user:al"]}))
    docs = _docs(tmp_path, {"stream": "docs", "acl_field": "meta.acl", "acl_file": "acl.yaml"})
    assert docs["a"].labels == {"user:al"} and docs["b"].labels == {"group:y", "user:bo"} and docs["c"].labels == set()


def test_bad_labels_and_unknown_streams_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="train.jsonl:1: meta.acl: ACL labels must be"):
        _docs(tmp_path, {"stream": "docs", "acl_field": "meta.acl"}, [{"id": "a", "text": "x", "meta": {"acl": 3}}])
    with pytest.raises(ConfigError, match="no stream 'nope'"):
        _docs(tmp_path, {"stream": "nope"})
    cfg = load(write_run(tmp_path, DOCS))
    (cfg.run_path / "data" / "manifest.json").unlink()
    with pytest.raises(StageError, match="has not finished"):
        read_documents(cfg.kb, RunDir(cfg.run_path))


def test_path_sources_read_jsonl_and_text_files(tmp_path):
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "faq.md").write_text("FAQ\n\nAnswers here.")
    (folder / "rows.jsonl").write_text(json.dumps({"key": "r1", "body": "Row one"}) + "\n")
    write_run(tmp_path, DOCS)
    docs = _docs(tmp_path, {"path": "extra", "text_field": "body", "id_field": "key", "acl": ["public"]})
    assert set(docs) == {"faq.md", "r1"} and docs["r1"].text == "Row one"


def test_the_default_source_is_every_governed_stream_unlabelled(tmp_path):
    cfg = load(write_run(tmp_path, DOCS, kb={}))
    docs = read_documents(cfg.kb, RunDir(cfg.run_path))
    assert {d.id for d in docs} == {"a", "b", "c"} and all(not d.labels for d in docs)


def test_config_refuses_contradictions():
    with pytest.raises(ValidationError, match="exactly one of"):
        KBConfig.model_validate({"sources": [{"stream": "a", "path": "b"}]})
    with pytest.raises(ValidationError, match="overlap_tokens"):
        KBConfig.model_validate({"chunk": {"max_tokens": 32, "overlap_tokens": 32}})
    with pytest.raises(ValidationError, match="embedder_model"):
        KBConfig.model_validate({"retrieval": {"embedder": "sentence-transformers"}})
    with pytest.raises(ValidationError, match="extra"):
        KBConfig.model_validate({"sorces": []})


def test_access_of_groups_users_and_narrowing():
    p = type("P", (), {"id": "u", "key_id": "k", "user": "al", "groups": frozenset({"x"}), "scopes": {}})()
    assert access_of(p).labels == {"public", "user:al", "group:x"}
    assert access_of(p, narrow=["group:x", "group:z"]).labels == {"group:x"}
    assert not access_of(p).admits([]) and access_of(p).admits(["group:x", "group:q"])


def test_cli_build_and_query(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from domaintune.cli import app

    config = write_run(tmp_path, DOCS, kb={"sources": [{"stream": "docs", "acl_field": "meta.acl"}],
                                           "retrieval": {"mode": "lexical"}, "chunk": {"tokenizer": "tok"}})
    from fixtures.tiny_model import build_tokenizer

    build_tokenizer().save_pretrained(tmp_path / "tok")
    r = CliRunner().invoke(app, ["kb", "build", str(config)])
    assert r.exit_code == 0, r.output
    assert "3 documents" in r.output and "added 3" in r.output
    r = CliRunner().invoke(app, ["kb", "query", str(config), "second", "--user", "bo"])
    assert r.exit_code == 0 and "b#0" not in r.output and "[1] b" in r.output
    r = CliRunner().invoke(app, ["kb", "query", str(config), "first", "--user", "bo"])
    assert "no chunk this principal may read" in r.output
    r = CliRunner().invoke(app, ["kb", "query", str(tmp_path / "missing.yaml"), "x"])
    assert r.exit_code != 0
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "second", "answer": "second", "documents": ["b"]}) + "\n")
    r = CliRunner().invoke(app, ["kb", "eval", str(config), "--questions", str(questions), "--modes", "lexical"])
    assert r.exit_code == 0, r.output
    assert "recall@5" in r.output and "1.000" in r.output
    assert json.loads((tmp_path / "runs/t/kb/kb/eval.json").read_text())["retrieval"][0]["recall@5"] == 1.0
