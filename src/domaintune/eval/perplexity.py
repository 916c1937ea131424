"""Exact, batched document-level perplexity and bits-per-byte.

Every document is scored on its own: each real text token is predicted exactly once, from the
document's own preceding tokens only (never from a neighbouring document). Documents longer
than ``window`` are scored with the sliding-window method of the Hugging Face guide
"Perplexity of fixed-length models": each window predicts only the tokens no earlier window
predicted, and uses the rest of the window as context.

Windows are counted in *model inputs*: a window of ``window`` input tokens predicts the next
``window`` tokens, so the model never sees more than ``window`` positions and, even with
``stride == window`` (non-overlapping chunks), every scored token has at least one token of
context in its window.

Bits-per-byte (nanochat's ``loss_eval``) divides the summed NLL by the UTF-8 byte count, so
models with different tokenizers can be compared on the same text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from domaintune.models import evaluating

__all__ = ["DocScore", "StreamScore", "aggregate", "count_requests", "score_documents"]


@dataclass
class DocScore:
    """The score of one document."""

    nll: float  # summed negative log-likelihood in nats over the scored tokens
    tokens: int  # number of scored (predicted) tokens
    bytes: int  # UTF-8 bytes of the document text


@dataclass
class StreamScore:
    """Totals over many documents (one stream). Derived metrics are NaN when undefined."""

    docs: int
    tokens: int
    bytes: int
    nll: float

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else math.nan

    @property
    def ppl(self) -> float:
        return math.exp(self.loss) if self.tokens else math.nan

    @property
    def bpb(self) -> float:
        return self.nll / (self.bytes * math.log(2)) if self.bytes else math.nan

    def to_dict(self) -> dict:
        return {"docs": self.docs, "tokens": self.tokens, "bytes": self.bytes,
                "loss": self.loss, "ppl": self.ppl, "bpb": self.bpb}


class _Request(NamedTuple):
    """One forward row: ``tokens[:-1]`` is the model input, ``tokens[1:]`` the targets, and
    only the last ``n_scored`` targets count (the rest are context)."""

    doc: int
    tokens: list[int]
    n_scored: int


def _check_args(window: int, stride: int, batch_size: int) -> None:
    if not 0 < stride <= window:
        raise ValueError(
            f"perplexity: need 0 < stride <= window, got window={window}, stride={stride}; "
            "a stride above the window would skip tokens and a stride <= 0 never advances "
            "(use stride == window for non-overlapping windows)."
        )
    if batch_size < 1:
        raise ValueError(f"perplexity: batch_size must be >= 1, got {batch_size}.")


def _start_token(tokenizer, add_bos: bool) -> int | None:
    """The token each document starts from: BOS, else EOS as the document separator, else none
    (then the document's first token has no context and is not scored)."""
    if not add_bos:
        return None
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    return tokenizer.eos_token_id


def _windows(n_inputs: int, window: int, stride: int):
    """Yield ``(begin, end, n_scored)`` over input positions ``[0, n_inputs)`` so that every
    position is scored by exactly one window (the HF sliding-window loop)."""
    prev_end = 0
    for begin in range(0, n_inputs, stride):
        end = min(begin + window, n_inputs)
        yield begin, end, end - prev_end
        prev_end = end
        if end == n_inputs:
            break


def _tokenize(tokenizer, texts: list[str], add_bos: bool) -> list[list[int]]:
    if not texts:
        return []
    # One batched call: fast tokenizers encode the list in parallel. No special tokens from
    # the tokenizer itself; the start token is our choice, made explicit here.
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    start = _start_token(tokenizer, add_bos)
    prefix = [] if start is None else [start]
    return [prefix + list(ids) if ids else [] for ids in encoded]


def _build_requests(seqs: list[list[int]], window: int, stride: int) -> list[_Request]:
    requests = []
    for doc, ids in enumerate(seqs):
        for begin, end, n_scored in _windows(len(ids) - 1, window, stride):
            requests.append(_Request(doc, ids[begin:end + 1], n_scored))
    return requests


def count_requests(tokenizer, texts: list[str], window: int = 1024, stride: int = 512,
                   add_bos: bool = True) -> int:
    """How many forward rows ``score_documents`` will run (to size a progress bar)."""
    _check_args(window, stride, 1)
    return len(_build_requests(_tokenize(tokenizer, texts, add_bos), window, stride))


def _score_batch(model, batch: list[_Request], pad_id: int, device) -> list[float]:
    """Summed NLL (nats) of the scored targets of each row in ``batch``."""
    width = max(len(r.tokens) - 1 for r in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    targets = torch.zeros_like(input_ids)
    mask = torch.zeros_like(input_ids)
    scored = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, req in enumerate(batch):
        n = len(req.tokens) - 1  # right padding keeps default position ids correct
        input_ids[row, :n] = torch.tensor(req.tokens[:-1])
        targets[row, :n] = torch.tensor(req.tokens[1:])
        mask[row, :n] = 1
        scored[row, n - req.n_scored:n] = True
    # use_cache=False is mandatory (DESIGN.md, measured): with the default cache path, CPU
    # sdpa/eager scores drifted from per-document scores (up to 1.9 in logits).
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                   use_cache=False).logits
    scored, targets = scored.to(logits.device), targets.to(logits.device)
    # Only the scored positions go to float32, so the upcast copy is (n_scored, vocab) rather
    # than (batch, width, vocab).
    logprobs = torch.log_softmax(logits[scored].float(), dim=-1)
    token_nll = -logprobs.gather(-1, targets[scored].unsqueeze(-1)).squeeze(-1)
    rows = scored.nonzero()[:, 0]
    per_row = torch.zeros(len(batch), dtype=torch.float32, device=logits.device)
    return per_row.index_add_(0, rows, token_nll).tolist()


def score_documents(model, tokenizer, texts: list[str], *, window: int = 1024, stride: int = 512,
                    batch_size: int = 4, add_bos: bool = True,
                    progress: Callable[[int], None] | None = None) -> list[DocScore]:
    """Score each text as its own document; results are in input order.

    A document with nothing to predict (empty text, or a single token when there is no start
    token) gets ``DocScore(nll=0.0, tokens=0, bytes=...)``; ``aggregate`` leaves such documents
    out. ``progress(n)`` is called after each batch with the number of requests that batch
    completed (an increment, as ``rich`` ``advance`` and ``tqdm.update`` expect); the total is
    ``count_requests(...)`` with the same arguments.
    """
    _check_args(window, stride, batch_size)
    seqs = _tokenize(tokenizer, texts, add_bos)
    requests = _build_requests(seqs, window, stride)
    # Longest first: the first batch shows an out-of-memory error at once, and rows of equal
    # length batch together so little compute goes to padding.
    requests.sort(key=lambda r: len(r.tokens), reverse=True)
    nll = [0.0] * len(texts)
    tokens = [0] * len(texts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    with evaluating(model), torch.inference_mode():
        for i in range(0, len(requests), batch_size):
            batch = requests[i:i + batch_size]
            for req, value in zip(batch, _score_batch(model, batch, pad_id, device)):
                nll[req.doc] += value  # Python floats: per-document sums in float64
                tokens[req.doc] += req.n_scored
            if progress is not None:
                progress(len(batch))
    return [DocScore(nll=n, tokens=t, bytes=len(text.encode("utf-8")))
            for n, t, text in zip(nll, tokens, texts)]


def aggregate(scores: list[DocScore]) -> StreamScore:
    """Sum document scores into a stream score.

    Documents with ``tokens == 0`` are left out entirely (not counted in ``docs``, and their
    bytes are not added): their bytes were never predicted, and counting them would lower bpb.
    """
    kept = [s for s in scores if s.tokens > 0]
    return StreamScore(docs=len(kept), tokens=sum(s.tokens for s in kept),
                       bytes=sum(s.bytes for s in kept), nll=math.fsum(s.nll for s in kept))
