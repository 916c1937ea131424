"""Incremental text with stop strings, and next-token choice."""

from __future__ import annotations

import torch

from domaintune.serve.engine.decoding import TextTracker, choose_token, make_generator


class CharTokenizer:
    """One token per character (ids are code points): makes split-across-token cases easy to write."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def _feed(text: str, stops: list[str]) -> tuple[list[str], TextTracker]:
    tracker, out = TextTracker(CharTokenizer(), stops), []
    for ch in text:
        out.append(tracker.push(ord(ch)))
        if tracker.stopped:
            break
    return out, tracker


def test_a_stop_string_split_over_tokens_is_held_back_then_cut():
    pieces, tracker = _feed("ab<EN>cd<END>tail", ["<END>"])
    assert tracker.stopped and "".join(pieces) == "ab<EN>cd"
    assert "<" not in pieces[2]  # "<" was held until it could no longer start "<END>"


def test_without_a_stop_the_held_tail_is_flushed_at_the_end():
    pieces, tracker = _feed("ab<EN", ["<END>"])
    assert not tracker.stopped and "".join(pieces) == "ab"
    assert tracker.flush() == "<EN"


def test_the_earliest_of_several_stops_wins_and_text_is_never_sent_twice():
    pieces, tracker = _feed("xxSTOPyyEND", ["END", "STOP"])
    assert "".join(pieces) == "xx" and tracker.flush() == ""


def test_greedy_takes_the_argmax_and_top_p_keeps_only_the_nucleus():
    logits = torch.tensor([0.0, 5.0, 1.0, 4.9])
    assert choose_token(logits, 0.0, 1.0, make_generator(0)) == 1
    draws = {choose_token(logits, 1.0, 0.01, make_generator(s)) for s in range(20)}
    assert draws == {1}  # a tiny nucleus holds only the most likely token
    wide = {choose_token(logits, 1.0, 1.0, make_generator(s)) for s in range(200)}
    assert {1, 3} <= wide


def test_the_same_seed_draws_the_same_tokens():
    logits = torch.randn(50)
    a = [choose_token(logits, 0.8, 0.9, g) for g in [make_generator(7)] for _ in range(10)]
    b = [choose_token(logits, 0.8, 0.9, g) for g in [make_generator(7)] for _ in range(10)]
    assert a == b
