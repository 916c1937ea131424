"""Scoring: batched log-likelihood of answer options, and greedy generation + answer extraction.

Log-likelihoods follow lm-evaluation-harness's conventions so the numbers agree with it:
context and continuation are tokenized together and split where the context's tokens end
(trailing spaces of the context move to the continuation), no special tokens are added, long
inputs are cut from the left, and `acc_norm` divides each option's log-likelihood by the
option's length in characters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from domaintune.benchmarks.extractors import get_extractor
from domaintune.benchmarks.tasks import LoadedTask, continuations
from domaintune.models import evaluating

Progress = Callable[[int], None] | None


@dataclass
class TaskResult:
    task: str
    version: str
    kind: str
    n: int
    shots: int
    metrics: dict[str, float]
    per_subject: dict[str, float] = field(default_factory=dict)
    dropped_rows: int = 0
    seconds: float = 0.0
    items_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), split so the pair tokenizes exactly as the joined text."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    if not ctx:  # nothing to condition on: start from the end-of-text token, as the harness does
        start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
        return [start], whole
    return ctx, whole[len(ctx):]


def _score_batch(model, inputs: list[tuple[int, ...]], reads: list[list[tuple[list[int], int]]], pad_id: int,
                 device) -> list[list[tuple[float, bool]]]:
    """One forward over `inputs`; for each input, (sum of log-probs of its last n targets, whether
    greedy decoding would produce them) for every (tokens, n) that reads from it."""
    width = max(len(t) for t in inputs)
    input_ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, ids in enumerate(inputs):
        input_ids[r, :len(ids)] = torch.tensor(ids)  # right padding: positions stay 0..n-1
        mask[r, :len(ids)] = 1
    # Only the last `keep` positions need logits: skipping the LM head elsewhere saves ~20% of a
    # small model's forward (rows of a batch have similar lengths, so `keep` stays short).
    keep = width - min((len(ids) - n for ids, rs in zip(inputs, reads) for _, n in rs if n), default=width - 1)
    logits = _forward(model, input_ids.to(device), mask.to(device), keep)
    offset = width - logits.shape[1]
    out = []
    for r, ids in enumerate(inputs):
        row = []
        for tokens, n in reads[r]:
            if n == 0:  # the continuation merged into the context's last token: nothing left to predict
                row.append((0.0, True))
                continue
            logprobs = torch.log_softmax(logits[r, len(ids) - n - offset:len(ids) - offset].float(), dim=-1)
            target = torch.tensor(tokens[-n:], device=logprobs.device)
            picked = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            row.append((float(picked.sum()), bool((logprobs.argmax(-1) == target).all())))
        out.append(row)
    return out


def _forward(model, input_ids, mask, keep: int):
    """Logits of the last `keep` positions (all positions for models without `logits_to_keep`).
    use_cache=False: DESIGN.md measured cache-path drift on CPU, and scoring never needs the cache."""
    try:
        return model(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
    except TypeError:
        return model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


def loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8,
                   max_length: int | None = None, progress: Progress = None) -> list[tuple[float, bool]]:
    """Log-likelihood of each continuation given its context, in input order.

    Requests with identical model inputs share one forward pass (the options " A", " B", ... of a
    multiple-choice question are one-token continuations of the same context: 4x fewer passes).
    Inputs are sorted longest first so each batch holds similar lengths (little padding) and an
    out-of-memory error shows on the first batch.
    """
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    groups: dict[tuple[int, ...], list[int]] = {}
    rows = []
    for i, (context, continuation) in enumerate(pairs):
        ctx, cont = encode_pair(tokenizer, context, continuation)
        tokens = (ctx + cont)[-(max_length + 1):]
        rows.append((tokens, min(len(cont), len(tokens) - 1)))
        groups.setdefault(tuple(tokens[:-1]), []).append(i)
    inputs = sorted(groups, key=len, reverse=True)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    with evaluating(model), torch.inference_mode():
        for b in range(0, len(inputs), batch_size):
            batch = inputs[b:b + batch_size]
            scored = _score_batch(model, batch, [[rows[i] for i in groups[x]] for x in batch], pad_id, device)
            for x, values in zip(batch, scored):
                for i, value in zip(groups[x], values):
                    results[i] = value
            if progress:
                progress(sum(len(groups[x]) for x in batch))
    return results


def choose(lls: list[float], option_chars: list[int]) -> tuple[int, int]:
    """(argmax of log-likelihood, argmax of log-likelihood per character) — acc and acc_norm picks."""
    raw = max(range(len(lls)), key=lambda i: lls[i])
    norm = max(range(len(lls)), key=lambda i: lls[i] / max(option_chars[i], 1))
    return raw, norm


def _chat(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def contexts(task: LoadedTask, tokenizer) -> list[str]:
    prompts = [task.context(item) for item in task.items]
    return [_chat(tokenizer, c) for c in prompts] if task.spec.chat_template else prompts


def score_multiple_choice(model, tokenizer, task: LoadedTask, batch_size: int = 8,
                          progress: Progress = None) -> tuple[dict[str, float], dict[str, float]]:
    pairs, spans = [], []
    for item, context in zip(task.items, contexts(task, tokenizer)):
        conts = continuations(task.spec, item)
        spans.append((len(pairs), len(conts), [len(c.removeprefix(task.spec.prompt.target_delimiter))
                                               for c in conts]))
        pairs += [(context, c) for c in conts]
    lls = [ll for ll, _ in loglikelihoods(model, tokenizer, pairs, batch_size, progress=progress)]
    correct, correct_norm, by_subject = 0, 0, {}
    for item, (start, n, chars) in zip(task.items, spans):
        raw, norm = choose(lls[start:start + n], chars)
        correct += raw == item.gold
        correct_norm += norm == item.gold
        by_subject.setdefault(item.subject, []).append(raw == item.gold)
    n = len(task.items)
    return ({"acc": correct / n, "acc_norm": correct_norm / n},
            {s: sum(v) / len(v) for s, v in sorted(by_subject.items())})


def generate_until(model, tokenizer, prompts: list[str], max_new_tokens: int, until: list[str],
                   batch_size: int = 8, progress: Progress = None) -> list[str]:
    """Greedy continuations, cut at the first stop string; batched with left padding."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    outputs = [""] * len(prompts)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with evaluating(model), torch.inference_mode():
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                enc = tokenizer([prompts[k] for k in idx], add_special_tokens=False, padding=True,
                                return_tensors="pt").to(device)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=pad_id, use_cache=True)
                for k, row in zip(idx, gen[:, enc["input_ids"].shape[1]:]):
                    outputs[k] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), until)
                if progress:
                    progress(len(idx))
    finally:
        tokenizer.padding_side = side
    return outputs


def cut_at_stop(text: str, until: list[str]) -> str:
    cut = min((text.find(s) for s in until if s and s in text), default=len(text))
    return text[:cut]


def score_generation(model, tokenizer, task: LoadedTask, batch_size: int = 8,
                     progress: Progress = None) -> tuple[dict[str, float], dict[str, float]]:
    g = task.spec.generation
    extract, gold_extract = get_extractor(g.extract), get_extractor(g.gold_extract)
    outputs = generate_until(model, tokenizer, contexts(task, tokenizer), g.max_new_tokens, g.until,
                             batch_size, progress)
    hits, by_subject = 0, {}
    for item, out in zip(task.items, outputs):
        ok = extract(out) == gold_extract(str(item.gold)) != ""
        hits += ok
        by_subject.setdefault(item.subject, []).append(ok)
    return ({"exact_match": hits / len(task.items)},
            {s: sum(v) / len(v) for s, v in sorted(by_subject.items())})


def request_count(task: LoadedTask) -> int:
    """Forward requests `score_task` will make (to size a progress bar)."""
    if task.spec.kind == "generation":
        return len(task.items)
    return sum(len(i.choices) for i in task.items)


def score_task(model, tokenizer, task: LoadedTask, batch_size: int = 8, progress: Progress = None) -> TaskResult:
    t0 = time.perf_counter()
    scorer = score_generation if task.spec.kind == "generation" else score_multiple_choice
    metrics, per_subject = scorer(model, tokenizer, task, batch_size, progress)
    dt = time.perf_counter() - t0
    return TaskResult(task=task.name, version=task.spec.version, kind=task.spec.kind, n=len(task.items),
                      shots=task.shots, metrics=metrics, per_subject=per_subject, dropped_rows=len(task.dropped),
                      seconds=round(dt, 3), items_per_s=len(task.items) / dt if dt > 0 else math.inf)
