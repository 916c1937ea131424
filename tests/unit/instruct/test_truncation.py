import pytest
from transformers import AutoTokenizer

from domaintune.instruct.masking import encode_conversation
from domaintune.instruct.truncation import fit

LONG = "The fee schedule lists many charges. " * 6
CONV = {"messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": LONG}, {"role": "assistant", "content": LONG},
                     {"role": "user", "content": "Wire fee?"}, {"role": "assistant", "content": "35 dollars, " * 8}]}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def lengths(tokenizer):
    full = len(encode_conversation(tokenizer, CONV["messages"]).input_ids)
    last = CONV["messages"][:1] + CONV["messages"][3:]
    return full, len(encode_conversation(tokenizer, last).input_ids)


def test_short_conversations_fit_unchanged(tokenizer, lengths):
    out = fit(tokenizer, CONV, lengths[0], "drop")
    assert out.outcome == "fits" and len(out.encoded.input_ids) == lengths[0]


def test_drop_quarantines_with_the_length(tokenizer, lengths):
    out = fit(tokenizer, CONV, lengths[0] - 1, "drop")
    assert out.encoded is None and f"{lengths[0]} tokens > sft.max_len" in out.reason


def test_history_drops_oldest_exchange_and_keeps_the_final_answer_whole(tokenizer, lengths, labelled_spans):
    out = fit(tokenizer, CONV, lengths[1], "history")
    assert out.outcome == "history_trimmed"
    assert labelled_spans(tokenizer, out.encoded) == ["35 dollars, " * 8 + "<|im_end|>\n"]
    too_small = fit(tokenizer, CONV, lengths[1] - 1, "history")
    assert too_small.encoded is None and "last exchange alone" in too_small.reason


def test_answer_policy_cuts_and_says_so(tokenizer, lengths):
    out = fit(tokenizer, CONV, lengths[0] - 5, "answer")
    assert out.outcome == "answer_cut" and len(out.encoded.input_ids) == lengths[0] - 5
    # a prompt that alone exceeds max_len is never kept with no answer at all
    assert fit(tokenizer, CONV, 10, "answer").encoded is None
