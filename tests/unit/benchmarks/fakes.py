"""A character-level fake tokenizer and a bigram fake model with hand-set probabilities, so scoring
results can be checked against log-probabilities computed by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

VOCAB = {"a": 0, "b": 1, "c": 2, " ": 3}
# P(next | previous) as a table: row = previous token, column = next token.
PROBS = [
    [0.1, 0.2, 0.3, 0.4],  # after "a"
    [0.5, 0.1, 0.1, 0.3],  # after "b"
    [0.25, 0.25, 0.25, 0.25],  # after "c"
    [0.6, 0.3, 0.05, 0.05],  # after " "
]


def logp(prev: str, nxt: str) -> float:
    return math.log(PROBS[VOCAB[prev]][VOCAB[nxt]])


class FakeTokenizer:
    pad_token_id = 0
    eos_token_id = 2
    bos_token_id = None

    def __call__(self, text, add_special_tokens=False):
        texts = [text] if isinstance(text, str) else text
        ids = [[VOCAB[ch] for ch in t] for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


class BigramModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.log(torch.tensor(PROBS)))
        self.config = SimpleNamespace(max_position_embeddings=64)
        self.calls: list[dict] = []

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        self.calls.append({"use_cache": use_cache, "shape": tuple(input_ids.shape)})
        return SimpleNamespace(logits=self.table[input_ids])
