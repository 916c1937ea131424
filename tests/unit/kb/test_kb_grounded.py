"""`kb sft-data`: the governed train split's Q/A pairs as served-format conversations, public documents
only, answers grounded in the shown sources with checked markers, eval questions kept out."""

from __future__ import annotations

import json

from kb_helpers import HashEmbedder, count_tokens, load, write_run

from domaintune.kb.answer import PREAMBLE, with_context
from domaintune.kb.grounded import EvalOverlap, pairs_in, write_sft_data
from domaintune.kb.service import build_from_config, open_from_config

DOCS = [
    {"id": "faq", "meta": {"acl": ["public"]}, "text": (
        "Wire FAQ\n\nQ: What does an outgoing international wire cost?\nA: An outgoing international wire costs "
        "$35 for Standard customers.\n\nQ: When do branches open?\nA: Branches open in the morning.\n\n"
        "问：境外电汇手续费是多少？\n答：境外电汇手续费为35美元。")},
    {"id": "hr", "meta": {"acl": ["group:hr"]}, "text": (
        "HR FAQ\n\nQ: What is the staff bonus pool?\nA: The staff bonus pool is $120,000 this year.")},
    {"id": "cards", "meta": {"acl": ["public"]}, "text": (
        "Cards\n\nQ: How much is a replacement card?\nA: A replacement card costs $10.\n\n"
        "Q: What is the card's late fee?\nA: The late fee is $25.")},
    {"id": "fees", "meta": {"acl": ["public"]}, "text": "Fees\n\nThe card late fee is $25 per month."},
]


def test_pairs_are_read_in_english_and_chinese():
    assert pairs_in("Q: a?\nA: b.\n\n问：c？\n答：d。\nQ: no answer\n") == [("a?", "b."), ("c？", "d。")]


def test_an_eval_question_sharing_an_ngram_is_caught():
    overlap = EvalOverlap(["What is the fee for an outgoing international wire transfer?"], 4)
    assert overlap.hits("How much does a wire abroad cost?") is False
    assert overlap.hits("so what is the fee for an outgoing international wire") is True
    zh = EvalOverlap(["境外电汇手续费是多少？"], 8)  # a CJK character counts as a word
    assert zh.hits("请问境外电汇的手续费") is False and zh.hits("我想知道境外电汇手续费是多少") is True


def test_sft_data_is_the_served_prompt_with_a_checked_citation(tmp_path):
    config = write_run(tmp_path, DOCS, kb={"sources": [{"stream": "docs", "acl_field": "meta.acl"}],
                                           "eval_set": "eval.jsonl"})
    (tmp_path / "eval.jsonl").write_text(json.dumps({"question": "How much is a replacement card?", "answer": "$10",
                                                     "documents": ["cards"]}) + "\n", encoding="utf-8")
    cfg = load(config)
    emb = HashEmbedder()
    build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
    kb = open_from_config(cfg, embedder=emb)
    out = tmp_path / "sft" / "kb.jsonl"
    report = write_sft_data(cfg, kb, out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert report.pairs == 6 and report.kept == len(rows) == 3
    # not in sources: "open in the morning" states no number a source could be checked against
    assert report.dropped == {"not_public": 1, "eval_overlap": 1, "not_in_sources": 1, "duplicate": 0}
    wire, zh, late = rows
    *prompt, target = wire["messages"]
    question = "What does an outgoing international wire cost?"
    assert prompt[0]["content"] == PREAMBLE and target["role"] == "assistant"
    assert target["content"].startswith("An outgoing international wire costs $35 for Standard customers [")
    n = int(target["content"].rsplit("[", 1)[1].split("]")[0])
    shown = prompt[-1]["content"]
    assert f'<source n="{n}"' in shown and "$35" in shown.split(f'<source n="{n}"')[1].split("</source>")[0]
    assert prompt == with_context([{"role": "user", "content": question}],
                                  kb.passages(kb.search(_public(), question), question))
    assert "bonus" not in out.read_text(encoding="utf-8")  # group:hr: neither a pair nor a source
    assert zh["messages"][-1]["content"].startswith("境外电汇手续费为35美元 [")
    assert late["messages"][-1]["content"].startswith("The late fee is $25 [")
    assert json.loads((tmp_path / "sft" / "kb.jsonl.report.json").read_text())["kept"] == 3


def _public():
    from domaintune.kb.grounded import PublicReader

    return PublicReader()


def test_cli_writes_the_file_and_says_what_it_dropped(tmp_path):
    from typer.testing import CliRunner

    from domaintune.cli import app
    from fixtures.tiny_model import build_tokenizer

    config = write_run(tmp_path, DOCS, kb={"sources": [{"stream": "docs", "acl_field": "meta.acl"}],
                                           "retrieval": {"mode": "lexical"}, "chunk": {"tokenizer": "tok"}})
    build_tokenizer().save_pretrained(tmp_path / "tok")
    assert CliRunner().invoke(app, ["kb", "build", str(config)]).exit_code == 0
    out = tmp_path / "kb_sft.jsonl"
    r = CliRunner().invoke(app, ["kb", "sft-data", str(config), "--out", str(out), "--limit", "1"])
    assert r.exit_code == 0, r.output
    assert "1 conversations" in r.output and "dropped:" in r.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1
    r = CliRunner().invoke(app, ["kb", "sft-data", str(tmp_path / "missing.yaml"), "--out", str(out)])
    assert r.exit_code != 0


def test_a_named_eval_set_that_is_missing_is_an_error_not_a_skipped_check(tmp_path):
    import pytest

    from domaintune.errors import ConfigError

    config = write_run(tmp_path, DOCS, kb={"sources": [{"stream": "docs", "acl_field": "meta.acl"}],
                                           "eval_set": "missing.jsonl"})
    cfg = load(config)
    emb = HashEmbedder()
    build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
    with pytest.raises(ConfigError, match="kb.eval_set: file not found"):
        write_sft_data(cfg, open_from_config(cfg, embedder=emb), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
