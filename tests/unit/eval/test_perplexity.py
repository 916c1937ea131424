"""domaintune.eval.perplexity: exact per-document NLL, sliding windows, batching, aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from domaintune.eval.perplexity import (
    DocScore,
    StreamScore,
    aggregate,
    count_requests,
    score_documents,
)

# Different lengths on purpose, short first, so sorting by length really reorders requests.
TEXTS = [
    "Savings accounts earn interest monthly.",
    "The bank charges a fee of 15 dollars for international wire transfers. " * 3
    + "海港银行的跨境汇款手续费为每笔十五美元。",
    "def main():\n    print('hi')\n    return 0",
    "Quarterly revenue grew 12%; margins held.",
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _ids(tokenizer, text, bos=True):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if bos else []) + ids


def _hf_nll(model, ids, labels=None):
    """Summed NLL via HF's own loss: mean over predicted tokens times their count."""
    ids_t = torch.tensor([ids])
    labels_t = ids_t if labels is None else torch.tensor([labels])
    with torch.no_grad():
        loss = model(input_ids=ids_t, labels=labels_t, use_cache=False).loss.item()
    n_predicted = int((labels_t[0, 1:] != -100).sum())
    return loss * n_predicted, n_predicted


@pytest.mark.parametrize("batch_size", [1, 3])
def test_matches_unbatched_reference(model_and_tokenizer, batch_size):
    model, tok = model_and_tokenizer
    scores = score_documents(model, tok, TEXTS, batch_size=batch_size)
    assert len({len(_ids(tok, t)) for t in TEXTS}) == len(TEXTS)  # really different lengths
    for text, score in zip(TEXTS, scores):
        ref_nll, ref_tokens = _hf_nll(model, _ids(tok, text))
        assert score.tokens == ref_tokens == len(_ids(tok, text, bos=False))
        assert score.nll == pytest.approx(ref_nll, abs=1e-4)
        assert score.bytes == len(text.encode("utf-8"))


def test_without_start_token_first_token_is_not_scored(model_and_tokenizer):
    model, tok = model_and_tokenizer
    scores = score_documents(model, tok, TEXTS[:2], add_bos=False, batch_size=2)
    for text, score in zip(TEXTS[:2], scores):
        ids = _ids(tok, text, bos=False)
        ref_nll, ref_tokens = _hf_nll(model, ids)
        assert score.tokens == ref_tokens == len(ids) - 1
        assert score.nll == pytest.approx(ref_nll, abs=1e-4)


def test_window_at_least_doc_length_is_single_pass(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = _ids(tok, TEXTS[1])
    score = score_documents(model, tok, [TEXTS[1]], window=len(ids), stride=3)[0]
    assert score.nll == pytest.approx(_hf_nll(model, ids)[0], abs=1e-4)


def test_sliding_window_scores_every_token_once(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = _ids(tok, TEXTS[1])
    assert len(ids) > 20
    window, stride = 8, 3
    full = score_documents(model, tok, [TEXTS[1]])[0]
    slid = score_documents(model, tok, [TEXTS[1]], window=window, stride=stride, batch_size=3)[0]
    assert slid.tokens == full.tokens == len(ids) - 1
    assert abs(slid.nll - full.nll) > 1e-3  # less context -> a different value

    # Hand-rolled HF sliding loop: window 8 inputs predict the next 8 tokens; each later window
    # advances by 3 and scores only its last (new) targets.
    ref_nll, ref_tokens, prev_end, n_inputs = 0.0, 0, 0, len(ids) - 1
    for begin in range(0, n_inputs, stride):
        end = min(begin + window, n_inputs)
        chunk = ids[begin:end + 1]
        new = end - prev_end
        labels = [-100] * (len(chunk) - new) + chunk[-new:]
        nll, n = _hf_nll(model, chunk, labels)
        ref_nll, ref_tokens, prev_end = ref_nll + nll, ref_tokens + n, end
        if end == n_inputs:
            break
    assert ref_tokens == slid.tokens
    assert slid.nll == pytest.approx(ref_nll, abs=1e-4)


def test_non_overlapping_windows_score_every_token(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = _ids(tok, TEXTS[1])
    score = score_documents(model, tok, [TEXTS[1]], window=5, stride=5)[0]
    assert score.tokens == len(ids) - 1
    assert math.isfinite(score.nll) and score.nll > 0


def test_results_in_input_order(model_and_tokenizer):
    model, tok = model_and_tokenizer
    forward = score_documents(model, tok, TEXTS, window=16, stride=8, batch_size=2)
    backward = score_documents(model, tok, TEXTS[::-1], window=16, stride=8, batch_size=2)
    assert [s.bytes for s in forward] == [len(t.encode("utf-8")) for t in TEXTS]
    for a, b in zip(forward, backward[::-1]):
        assert a.tokens == b.tokens
        assert a.nll == pytest.approx(b.nll, abs=1e-4)


def test_progress_counts_match_count_requests(model_and_tokenizer):
    model, tok = model_and_tokenizer
    seen = []
    score_documents(model, tok, TEXTS, window=16, stride=8, batch_size=3, progress=seen.append)
    total = count_requests(tok, TEXTS, window=16, stride=8)
    assert sum(seen) == total > len(TEXTS)
    assert all(0 < n <= 3 for n in seen)


def test_empty_texts_score_nothing_and_are_left_out(model_and_tokenizer):
    model, tok = model_and_tokenizer
    scores = score_documents(model, tok, ["", TEXTS[0], ""])
    assert scores[0] == DocScore(nll=0.0, tokens=0, bytes=0) == scores[2]
    assert scores[1].tokens > 0
    assert aggregate(scores).docs == 1
    assert score_documents(model, tok, []) == []


def test_aggregate_math():
    scores = [DocScore(nll=10.0, tokens=5, bytes=20), DocScore(nll=2.0, tokens=3, bytes=4),
              DocScore(nll=0.0, tokens=0, bytes=7)]
    total = aggregate(scores)
    assert (total.docs, total.tokens, total.bytes, total.nll) == (2, 8, 24, 12.0)
    assert total.loss == pytest.approx(1.5)
    assert total.ppl == pytest.approx(math.exp(1.5))
    assert total.bpb == pytest.approx(12.0 / (24 * math.log(2)))
    assert total.to_dict() == {"docs": 2, "tokens": 8, "bytes": 24, "loss": total.loss,
                               "ppl": total.ppl, "bpb": total.bpb}


def test_aggregate_of_nothing_is_nan():
    total = aggregate([])
    assert total == StreamScore(docs=0, tokens=0, bytes=0, nll=0.0)
    assert math.isnan(total.ppl) and math.isnan(total.bpb) and math.isnan(total.loss)


@pytest.mark.parametrize("window, stride", [(8, 9), (8, 0), (8, -1)])
def test_bad_stride_raises(model_and_tokenizer, window, stride):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match=r"0 < stride <= window.*stride="):
        score_documents(model, tok, TEXTS, window=window, stride=stride)
    with pytest.raises(ValueError, match="stride"):
        count_requests(tok, TEXTS, window=window, stride=stride)
