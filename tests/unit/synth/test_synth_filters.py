"""The synth filters: Chinese ROUGE-L, novelty, near-duplicates, grounding, refusals/leaks,
decontamination (every injected eval item caught, counts per set), Evol elimination, glossary swaps."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from domaintune.synth import filters
from domaintune.synth.methods import evol_eliminated, first_line, swap_synonyms
from domaintune.synth.oracle import Oracle
from domaintune.synth.report import fidelity
from domaintune.synth.text import distinct_n, numbers, rouge_l

ZH = "海港银行标准客户境外汇出汇款的手续费是多少？"


def test_identical_chinese_strings_score_one_where_rouge_score_gives_zero():
    assert rouge_l(ZH, ZH) == 1.0
    assert rouge_scorer.RougeScorer(["rougeL"]).score(ZH, ZH)["rougeL"].fmeasure == 0.0  # the bug we avoid
    assert 0.5 < rouge_l(ZH, "海港银行尊享客户境外汇出汇款的手续费是多少？") < 1.0
    assert rouge_l("What is the fee?", "what is the FEE") == 1.0
    assert rouge_l(ZH, "What is the fee?") == 0.0


def test_rouge_novelty_drops_near_copies_in_both_languages_and_matches_brute_force():
    pairs = [{"id": str(i), "question": q, "answer": "a"} for i, q in enumerate([
        "What is the fee for a domestic wire transfer?", "What is the fee for a domestic wire transfer today?",
        ZH, ZH.replace("？", "呢？"), "How do I report a lost card?"])]
    kept, scores = filters.rouge_novel(pairs, seeds=["How can I report a lost card?"], threshold=0.7)
    assert [p["id"] for p in kept] == ["0", "2"]
    brute = max(rouge_l(pairs[4]["question"], s) for s in ["How can I report a lost card?",
                                                          pairs[0]["question"], ZH])
    assert scores[4] == pytest.approx(brute)


def test_near_duplicates_use_minhash_and_keep_the_first():
    base = "What is the monthly fee for a Premier account at Harborview Bank and how can it be waived?"
    pairs = [{"id": "a", "question": base, "answer": "It is $25, waived above $50,000."},
             {"id": "b", "question": base + " Thanks", "answer": "It is $25, waived above $50,000."},
             {"id": "c", "question": "How do I order a new cheque book?", "answer": "In the app."}]
    assert [p["id"] for p in filters.near_duplicates(pairs, 0.8, 3)] == ["a", "c"]


def test_grounding_needs_the_answers_numbers_and_entities_in_the_chunk():
    chunk = "Outgoing international wires cost $35 for Standard customers; HarborPay is free up to $2,500 a day."
    assert filters.grounded("It costs $35.", chunk)[0]
    assert filters.grounded("You can send 2500 dollars a day with HarborPay.", chunk)[0]  # "2,500" == "2500"
    ok, missing = filters.grounded("It costs $25 through SwiftNet.", chunk)
    assert not ok and missing == ["25", "SwiftNet"]
    assert filters.grounded("手续费为十五美元。", "境内电汇手续费为15美元。")[0]  # Chinese numerals
    assert numbers("3.750% and 1,000.00") == {"3.75", "1000"}
    # the known false positive of a lexical check: right number, wrong wire type (the oracle catches it)
    assert filters.grounded("Inbound domestic wires cost $35.", chunk)[0]


def test_refusals_and_template_leaks_are_caught():
    assert filters.refusal_or_leak({"question": "Fee?", "answer": "I'm sorry, I cannot help."}) == "refusal"
    assert filters.refusal_or_leak({"question": "What does the text say about fees?", "answer": "x"}) == "leak"
    assert filters.refusal_or_leak({"question": "Fee?", "answer": "<|im_start|>assistant"}) == "leak"
    assert filters.refusal_or_leak({"question": "费用？", "answer": "抱歉，我无法回答。"}) == "refusal"
    assert filters.refusal_or_leak({"question": "What is the wire fee?", "answer": "$35."}) is None
    assert filters.length_ok({"question": "Fee?", "answer": "x"}, 2, 100) is False


def test_every_injected_eval_question_is_caught_and_counted_per_set():
    sets = filters.Contamination()
    eval_items = ["What is Harborview Bank's fee for an outgoing international wire transfer for a Standard "
                  "customer?", ZH, "What is the NSF fee?"]
    sets.add_set("eval:harborview", eval_items, 8)
    sets.add_set("heldout:domain/test", ["Term deposits of 12 months earn 3.10% a year and can be broken early "
                                         "for a fee of one month's interest."], 13)
    clean = [{"id": f"c{i}", "question": q, "answer": "It is listed in the fee schedule."} for i, q in
             enumerate(["How do I open an account?", "Where is the head office?", "什么是储蓄账户？"])]
    injected = [
        {"id": "i0", "question": eval_items[0], "answer": "$35"},  # verbatim
        {"id": "i1", "question": "Tell me: what is Harborview Bank's fee for an outgoing international wire "
                                 "transfer, please?", "answer": "$35"},  # paraphrased around the same 8-gram
        {"id": "i2", "question": "请问" + ZH, "answer": "35美元"},  # Chinese, by character n-grams
        {"id": "i3", "question": "what is the nsf fee", "answer": "$30"},  # short item: normalized exact match
        {"id": "i4", "question": "Rates?", "answer": "Term deposits of 12 months earn 3.10% a year and can be "
                                                     "broken early for a fee of one month's interest."},
    ]
    kept, counts, hits = filters.decontaminate(clean + injected, sets)
    assert [p["id"] for p in kept] == ["c0", "c1", "c2"]
    assert counts == {"eval:harborview": 4, "heldout:domain/test": 1}
    assert {h["id"] for h in hits} == {"i0", "i1", "i2", "i3", "i4"}


def test_evol_elimination_rules():
    parent = "What is the fee for a domestic wire?"
    assert evol_eliminated(parent, "#Rewritten Prompt#: What is the fee?", 0.9) == "template_copy"
    assert evol_eliminated(parent, "?!...", 0.9) == "punctuation_only"
    assert evol_eliminated(parent, "What is the fee for a domestic wire?", 0.9) == "no_new_information"
    assert evol_eliminated(parent, "What is the fee for a domestic wire sent after 4 pm by a Premier client, "
                                   "and is it refunded if recalled?", 0.9) is None


def test_glossary_swaps_never_touch_protected_terms():
    groups = [["保理融资", "应收账款保理业务"], ["wire", "wire transfer"]]
    assert swap_synonyms("保理融资的利率是多少？", groups, ["海港银行"]) == "应收账款保理业务的利率是多少？"
    assert swap_synonyms("What does a wire cost at Harborview Bank?", groups, ["Harborview Bank"]) == \
        "What does a wire transfer cost at Harborview Bank?"
    assert swap_synonyms("HarborPay wire limits", [["Pay", "Payment"]], ["HarborPay"]) is None


def test_first_line_strips_labels_and_numbering():
    assert first_line("\n1. Question: What is the fee?\nmore") == "What is the fee?"
    assert first_line("问题：费用是多少？") == "费用是多少？"


def test_oracle_and_grounding_precision():
    oracle = Oracle([{"question": "What does Harborview Bank charge a Standard customer for a domestic wire "
                                  "transfer?", "answer": "$15"}])
    assert oracle.judge("What does Harborview Bank charge Standard customers for a domestic wire?",
                        "It charges $15.") == "correct"
    assert oracle.judge("What does Harborview Bank charge a Standard customer for a domestic wire transfer?",
                        "$35") == "wrong"
    assert oracle.judge("Where is the head office?", "88 Quay Street") == "unmatched"
    f = fidelity([(True, "correct"), (True, "wrong"), (False, "wrong"), (True, "unmatched")])
    assert f["grounding_pass_rate"] == 0.75 and f["oracle_correctness"] == pytest.approx(1 / 3, abs=1e-3)
    assert f["grounding_precision"] == 0.5 and f["grounding_recall"] == 1.0


def test_distinct_n():
    assert distinct_n(["a b", "a b"], 1) == 0.5
    assert distinct_n(["海港银行", "海港"], 1) == pytest.approx(4 / 6)
