"""Per-sequence decoding: next-token choice (greedy or seeded sampling) and incremental text with stops.

Each sequence owns its torch.Generator, so a seeded request draws the same tokens whether it
ran alone or in a batch with others.
"""

from __future__ import annotations

import secrets


def make_generator(seed: int | None):
    import torch

    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed if seed is not None else secrets.randbits(63))
    return gen


def choose_token(logits, temperature: float, top_p: float, generator) -> int:
    """One token id from a 1-D logits row: argmax at temperature 0, else temperature + top-p sampling
    (the same order as transformers' warpers: temperature, then nucleus, then a multinomial draw)."""
    import torch

    if temperature <= 0.0:
        return int(torch.argmax(logits).item())
    scores = logits.float() / temperature
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1.0 - top_p)
        drop[-1] = False  # always keep the most likely token
        scores = scores.scatter(0, order[drop], float("-inf"))
    probs = scores.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _held_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-k:]):
                best = k
                break
    return best


class TextTracker:
    """Turns generated token ids into text deltas; finds stop strings, including ones split over tokens."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters already sent to the client
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to send (never past a stop string)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s, max(0, self.emitted - len(s))) for s in self.stops) if i >= 0),
                  default=-1)
        if cut >= 0:
            self.stopped = True
            return self._take(text[:cut])
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next byte token
            return ""
        return self._take(text[: len(text) - _held_suffix(text, self.stops)])

    def flush(self) -> str:
        """The held-back tail once the sequence ends for another reason (length, EOS)."""
        if self.stopped:
            return ""
        return self._take(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _take(self, upto: str) -> str:
        delta = upto[self.emitted:]
        self.emitted = max(self.emitted, len(upto))
        return delta
