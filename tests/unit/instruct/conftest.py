"""Shared helpers for the instruct tests."""

from __future__ import annotations

import pytest


def _labelled_spans(tokenizer, enc) -> list[str]:
    """Decoded runs of masked tokens: exactly the text the loss trains on."""
    spans, run = [], []
    for tok, m in zip(enc.input_ids, enc.loss_mask):
        if m:
            run.append(tok)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


@pytest.fixture
def labelled_spans():
    return _labelled_spans
