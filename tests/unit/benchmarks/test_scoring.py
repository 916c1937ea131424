"""Scoring math against log-probabilities computed by hand (bigram fake model)."""

import math

import pytest
from fakes import BigramModel, FakeTokenizer, logp

from domaintune.benchmarks.scoring import choose, cut_at_stop, encode_pair, loglikelihoods, score_multiple_choice
from domaintune.benchmarks.spec import TaskSpec
from domaintune.benchmarks.tasks import Item, LoadedTask, continuations


def test_loglikelihood_matches_hand_computed_bigram_sums():
    pairs = [("ab", " a"), ("c", "ab"), ("a", "b")]
    got = loglikelihoods(BigramModel(), FakeTokenizer(), pairs, batch_size=2)
    expected = [logp("b", " ") + logp(" ", "a"), logp("c", "a") + logp("a", "b"), logp("a", "b")]
    assert [g[0] for g in got] == pytest.approx(expected, abs=1e-6)
    # greedy: after "b" the most likely token is "a" (0.5), not " " -> not greedy
    assert [g[1] for g in got] == [False, False, False]
    assert loglikelihoods(BigramModel(), FakeTokenizer(), [("b", "a")])[0][1] is True


def test_batch_size_and_order_do_not_change_results():
    pairs = [("abc", " a"), ("a", "b"), ("c a", "bb"), ("b", " ")]
    one = loglikelihoods(BigramModel(), FakeTokenizer(), pairs, batch_size=1)
    many = loglikelihoods(BigramModel(), FakeTokenizer(), pairs, batch_size=4)
    assert [x[0] for x in one] == pytest.approx([x[0] for x in many], abs=1e-6)


def test_forward_passes_disable_the_cache():
    model = BigramModel()
    loglikelihoods(model, FakeTokenizer(), [("ab", " a"), ("a", "b")], batch_size=2)
    assert model.calls and all(c["use_cache"] is False for c in model.calls)


def test_trailing_context_spaces_move_to_the_continuation():
    ctx, cont = encode_pair(FakeTokenizer(), "ab ", "c")
    assert ctx == [0, 1] and cont == [3, 2]


def test_empty_context_starts_from_end_of_text():
    ctx, cont = encode_pair(FakeTokenizer(), "", "ab")
    assert ctx == [FakeTokenizer.eos_token_id] and cont == [0, 1]


def test_choose_acc_vs_length_normalized_acc():
    # raw: -4 beats -6; per character: -4/2 = -2 loses to -6/6 = -1
    assert choose([-4.0, -6.0], [2, 6]) == (0, 1)
    assert choose([-1.0, -3.0, -0.5], [1, 1, 1]) == (2, 2)


def _task(items, continuation="text"):
    spec = TaskSpec.model_validate({
        "name": "t", "version": "1", "kind": "multiple_choice",
        "fields": {"choices": "choices", "answer_format": "index"},
        "prompt": {"template": "{question}", "continuation": continuation, "target_delimiter": " "}})
    return LoadedTask(spec, items, items, "mem")


def test_multiple_choice_accuracy_from_hand_computed_scores():
    # after context "a": option " c" is short and unlikely per token, " aaaa" long and likelier per char
    items = [Item("1", "s", "a", ("c", "aaaa"), 0), Item("2", "s", "a", ("c", "aaaa"), 1)]
    metrics, per_subject = score_multiple_choice(BigramModel(), FakeTokenizer(), _task(items))
    ll_c = logp("a", " ") + logp(" ", "c")  # -3.91
    ll_aaaa = logp("a", " ") + logp(" ", "a") + 3 * logp("a", "a")  # -8.34, per char -2.09
    raw = 0 if ll_c > ll_aaaa else 1
    norm = 0 if ll_c / 1 > ll_aaaa / 4 else 1
    assert raw == 0 and norm == 1  # the example separates the two metrics
    assert metrics == {"acc": 0.5, "acc_norm": 0.5}
    assert per_subject == {"s": 0.5}


def test_label_continuations_score_letters_text_continuations_score_options():
    item = Item("1", "s", "q", ("x", "yy", "z"), 0)
    assert continuations(_task([item], "label").spec, item) == [" A", " B", " C"]
    assert continuations(_task([item], "text").spec, item) == [" x", " yy", " z"]


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("42\n\nQuestion: next", ["Question:", "\n\n"]) == "42"
    assert cut_at_stop("no stop here", ["</s>"]) == "no stop here"
    assert math.isfinite(len(cut_at_stop("", ["x"])))


def test_one_token_options_of_one_context_share_a_forward_pass():
    model = BigramModel()
    pairs = [("ab", " "), ("ab", "a"), ("ab", "b"), ("ab", "c")]
    got = loglikelihoods(model, FakeTokenizer(), pairs, batch_size=8)
    assert [g[0] for g in got] == pytest.approx([logp("b", x) for x in " abc"], abs=1e-6)
    assert len(model.calls) == 1 and model.calls[0]["shape"] == (1, 2)
    assert [g[1] for g in got] == [False, True, False, False]


def test_real_model_scores_equal_a_plain_full_forward(tiny_model_dir):
    """Batched, deduplicated, logits_to_keep scoring == one unpadded forward per request."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [("The bank charges a fee of", " 15 dollars"), ("The bank charges a fee of", " A"),
             ("海港银行的", "跨境汇款"), ("Savings accounts earn", " interest monthly; term"),
             ("海港银行的跨境汇款手续费为", "每笔十五美元")]  # the last one merges into the context's tokens
    got = loglikelihoods(model, tok, pairs, batch_size=3)
    assert encode_pair(tok, *pairs[-1])[1] == [] and got[-1] == (0.0, True)
    for (context, continuation), (ll, _) in zip(pairs[:-1], got):
        ctx, cont = encode_pair(tok, context, continuation)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ctx + cont[:-1]])).logits[0, -len(cont):]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(cont).unsqueeze(-1)).sum()
        assert ll == pytest.approx(float(expected), abs=1e-4)
