"""The synth filters, each a pass over candidate pairs that keeps some and counts the rest.

Order (the report's funnel): length -> refusal/leak -> grounding -> ROUGE-L novelty -> near-dup
-> decontamination -> judge. A pair is {"id", "method", "question", "answer", "lang", "source"?,
"chunk"?}. Every filter is deterministic, so re-running them over the journal is free.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from domaintune.governance.neardup import NearDupIndex, Signer
from domaintune.synth.text import entities, lcs_length, ngrams, numbers, tokens

Pair = dict[str, Any]


@lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern]:
    raw = yaml.safe_load((resources.files("domaintune.synth") / "filters.yaml").read_text(encoding="utf-8"))
    return {k: re.compile("|".join(f"(?:{p})" for p in v), re.IGNORECASE | re.MULTILINE) for k, v in raw.items()}


def length_ok(pair: Pair, min_chars: int, max_chars: int) -> bool:
    return all(min_chars <= len(pair[k].strip()) <= max_chars for k in ("question", "answer"))


def refusal_or_leak(pair: Pair) -> str | None:
    """'refusal' / 'leak' when the answer declines or either side echoes the prompt, else None."""
    p = _patterns()
    if p["refusals"].search(pair["answer"]):
        return "refusal"
    if p["leaks"].search(pair["question"]) or p["leaks"].search(pair["answer"]):
        return "leak"
    return None


def grounded(answer: str, chunk: str, glossary: tuple[str, ...] = ()) -> tuple[bool, list[str]]:
    """Numbers, capitalized entities and glossary terms of the answer must occur in the chunk.
    Necessary, not sufficient: "inbound domestic wires cost $15" passes when $15 is the outbound
    fee (the oracle check in the report measures how often this check is fooled)."""
    missing = sorted(numbers(answer) - numbers(chunk))
    low_chunk = chunk.lower()
    missing += sorted(e for e in entities(answer) if e.lower() not in low_chunk)
    missing += sorted(t for t in glossary if t in answer and t not in chunk)
    return not missing, missing


class RougePool:
    """Max ROUGE-L F1 of a text against a growing pool, without comparing with every member: an
    inverted index counts shared tokens, and LCS <= the multiset overlap, so a pool text whose
    overlap bound is <= the threshold cannot exceed it and is never aligned."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.texts: list[list[str]] = []
        self._post: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def add(self, toks: list[str]) -> None:
        i = len(self.texts)
        self.texts.append(toks)
        for t, c in Counter(toks).items():
            self._post[t].append((i, c))

    def max_score(self, toks: list[str], stop_at: float | None = None) -> float:
        """Best ROUGE-L F1 (exact among candidates whose bound passes `stop_at`, default the threshold)."""
        floor = self.threshold if stop_at is None else stop_at
        overlap: dict[int, int] = defaultdict(int)
        for t, c in Counter(toks).items():
            for i, pc in self._post.get(t, ()):
                overlap[i] += min(c, pc)
        best, n = 0.0, len(toks)
        for i, o in sorted(overlap.items(), key=lambda kv: -kv[1]):
            m = len(self.texts[i])
            if 2 * o / (n + m) <= max(best, floor):
                continue
            best = max(best, 2 * lcs_length(toks, self.texts[i]) / (n + m))
        return best


def rouge_novel(pairs: list[Pair], seeds: list[str], threshold: float) -> tuple[list[Pair], list[float]]:
    """Keep a pair whose question's max ROUGE-L to the seeds and the earlier kept questions is
    <= `threshold` (Self-Instruct keeps < 0.7). Returns the kept pairs and every pair's score."""
    pool = RougePool(threshold)
    for s in seeds:
        pool.add(tokens(s))
    kept, scores = [], []
    for pair in pairs:
        toks = tokens(pair["question"])
        score = pool.max_score(toks)
        scores.append(score)
        if score <= threshold and toks:
            kept.append(pair)
            pool.add(toks)
    return kept, scores


def near_duplicates(pairs: list[Pair], threshold: float, ngram: int) -> list[Pair]:
    """First of each MinHash near-duplicate cluster of question + answer (governance.neardup)."""
    signer, index, kept = Signer(ngram=ngram), NearDupIndex(threshold, ngram=ngram), []
    for pair in pairs:
        text = f"{pair['question']}\n{pair['answer']}"
        sig = signer(text)
        if index.match(text, sig) is None:
            index.add(pair["id"], text, sig)
            kept.append(pair)
    return kept


def _normal(text: str) -> str:
    return " ".join(tokens(text))


@dataclass
class Contamination:
    """n-gram sets of every eval task and held-out split; `check(text)` names the sets it overlaps."""

    ngram: dict[str, int] = field(default_factory=dict)
    _grams: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    _short: dict[str, list[str]] = field(default_factory=dict)  # items shorter than n: normalized exact match

    def add_set(self, name: str, texts: list[str], n: int) -> None:
        grams, short = self._grams.setdefault(name, set()), self._short.setdefault(name, [])
        self.ngram[name] = n
        for text in texts:
            toks = tokens(text)
            if len(toks) < n:
                if toks:
                    short.append(" ".join(toks))
            else:
                grams |= ngrams(toks, n)

    def check(self, text: str) -> list[str]:
        toks = tokens(text)
        norm = " " + " ".join(toks) + " "
        hits = []
        for name, grams in self._grams.items():
            n = self.ngram[name]
            if any(tuple(toks[i:i + n]) in grams for i in range(len(toks) - n + 1)) \
                    or any(f" {s} " in norm for s in self._short[name]):
                hits.append(name)
        return hits


def decontaminate(pairs: list[Pair], sets: Contamination) -> tuple[list[Pair], dict[str, int], list[dict]]:
    kept, per_set, hits = [], Counter(), []
    for pair in pairs:
        found = sets.check(f"{pair['question']}\n{pair['answer']}")
        if found:
            per_set.update(found)
            hits.append({"id": pair["id"], "question": pair["question"], "sets": found})
        else:
            kept.append(pair)
    return kept, {name: per_set.get(name, 0) for name in sets.ngram}, hits
