"""`kb eval`: recall@k and MRR per mode on a labelled set; answers scored with a (tiny) model."""

from __future__ import annotations

import json

import pytest
from kb_helpers import HashEmbedder, count_tokens, load, write_run

from domaintune.errors import DataError
from domaintune.kb.evaluate import answer_scores, generate_batched, holds, load_questions, retrieval_scores
from domaintune.kb.service import build_from_config, open_from_config

DOCS = [{"id": "wire", "text": "Wire fees\n\nAn outgoing international wire costs $35."},
        {"id": "card", "text": "Cards\n\nA replacement card costs $10."},
        {"id": "td", "text": "Deposits\n\nThe 12-month term deposit rate is 3.75%."}]
QS = [{"question": "international wire fee", "answer": "$35", "documents": ["wire"], "lang": "en"},
      {"question": "replacement card price", "answer": "$10", "documents": ["card"], "lang": "en"},
      {"question": "12-month deposit rate", "answer": "3.75%", "documents": ["td"], "lang": "en"},
      {"question": "mortgage arrangement fee", "answer": "$999", "documents": ["wire"], "lang": "en"}]


@pytest.fixture
def kb_and_cfg(tmp_path):
    cfg = load(write_run(tmp_path, DOCS))
    emb = HashEmbedder()
    build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
    return open_from_config(cfg, embedder=emb), cfg


def test_recall_and_mrr_count_only_chunks_that_hold_the_answer(kb_and_cfg):
    kb, _ = kb_and_cfg
    r = retrieval_scores(kb, QS, 2, "lexical")
    assert r["recall@2"] == 0.75 and 0.5 < r["mrr"] <= 0.75 and r["recall_by_lang"] == {"en": 0.75}
    assert r["latency_ms_p95"] >= r["latency_ms_p50"] > 0


def test_an_answer_is_held_only_as_the_whole_value():
    assert holds("An outgoing wire costs $35.", "$35") and holds("费用为35美元。", "35美元")
    assert not holds("The valuation fee is $350.", "$35") and not holds("月费15美元", "5美元")
    assert not holds("costs $35.50", "$35") and not holds("rate 11.5%", "1.5%")
    assert holds("a margin of 1.50%", "1.5%") and holds("a margin of 1.5%", "1.50%")
    assert holds("from $1,000.00", "$1,000") and not holds("up to $1,000,000", "$1,000")


def test_bad_rows_name_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(QS[0]) + "\n" + json.dumps({"question": "x"}) + "\n")
    with pytest.raises(DataError, match="q.jsonl:2"):
        load_questions(path)


@pytest.mark.slow
def test_answers_are_scored_per_model(kb_and_cfg, tmp_path):
    from fixtures.tiny_model import build_tiny_model_dir

    kb, cfg = kb_and_cfg
    cfg.model.base = str(build_tiny_model_dir(tmp_path / "tiny"))
    scores = answer_scores(cfg, kb, QS[:2])
    assert [s["model"] for s in scores] == ["base"]  # the run has no tuned model yet
    assert scores[0]["questions"] == 2 and 0 <= scores[0]["accuracy_with_retrieval"] <= 1
    assert set(scores[0]["by_lang"]["with_retrieval"]) == {"all", "en"} and len(scores[0]["replies"]) == 2


@pytest.mark.slow
def test_batched_generation_answers_as_one_prompt_at_a_time(tmp_path):
    """Left padding and length sorting change neither the order nor the greedy replies."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fixtures.tiny_model import build_tiny_model_dir

    where = build_tiny_model_dir(tmp_path / "tiny")
    model, tok = AutoModelForCausalLM.from_pretrained(where).eval(), AutoTokenizer.from_pretrained(where)
    torch.manual_seed(0)
    with torch.no_grad():  # larger random weights: the replies differ per prompt (the saved init repeats one token)
        for p in model.parameters():
            p.normal_(0, 0.3)
    prompts = [[{"role": "user", "content": text}] for text in
               ("wire fee", "what does a replacement card cost at the bank today", "rate", "a b c d e f g h")]
    one = [generate_batched(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert generate_batched(model, tok, prompts, max_new_tokens=6, batch_size=3) == one
    assert len(set(one)) > 1  # the prompts really differ in what they produce


def test_models_to_answer_with_are_checked(kb_and_cfg):
    from domaintune.errors import ConfigError

    kb, cfg = kb_and_cfg
    with pytest.raises(ConfigError, match="has no tuned model yet"):
        answer_scores(cfg, kb, QS[:1], only=("tuned",))
    with pytest.raises(ConfigError, match="--models: large is not base or tuned"):
        answer_scores(cfg, kb, QS[:1], only=("large",))


@pytest.mark.slow
def test_answers_are_scored_as_served_and_as_the_model_cited(kb_and_cfg, tmp_path, monkeypatch):
    """The served text is the answer filter's: an unmarked correct value gets its source's marker, a
    wrong marker is moved; `cited_by_model` counts only markers the model itself got right."""
    from domaintune.kb import evaluate
    from fixtures.tiny_model import build_tiny_model_dir

    kb, cfg = kb_and_cfg
    cfg.model.base = str(build_tiny_model_dir(tmp_path / "tiny"))
    replies = iter([["", ""], ["A wire costs $35.", "A card costs $10 [9]."]])  # no retrieval, then with it
    monkeypatch.setattr(evaluate, "generate_batched", lambda *a, **k: next(replies))
    [s] = answer_scores(cfg, kb, QS[:2])
    assert s["accuracy_with_retrieval"] == 1.0 and s["correct_and_cited"] == 1.0 and s["cited_by_model"] == 0.0
    served = [r["served"] for r in s["replies"]]
    assert served[0].startswith("A wire costs $35 [") and served[1].startswith("A card costs $10 [")
    assert s["replies"][1]["with_retrieval"] == "A card costs $10 [9]."  # the raw reply is kept too
