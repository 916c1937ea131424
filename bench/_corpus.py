"""Benchmark corpus: real text cut into documents whose token lengths follow a length profile.

Every variant trains on the *same* token ids, so a difference in throughput or loss comes from
batching, not from tokenization. Documents are contiguous slices of a real-text token stream
(records are merged with blank lines, then cut), each ending in the tokenizer's eos token.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from domaintune.mix.boundaries import boundary_tokens
from domaintune.mix.sampling import Doc

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
TOKENIZER_DIR = QUICKSTART / "models" / "smollm2-135m-instruct"
LENGTH_PROFILES = {
    # kind, min, max, median (lognormal only), sigma (lognormal only)
    "lognormal": ("lognormal", 20, 1024, 150, 1.0),
    "narrow": ("uniform", 200, 300, None, None),
}


@dataclass
class TokenStream:
    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]


@dataclass
class Corpus:
    profile: str
    train: list[Doc]
    heldout: list[Doc]
    vocab_size: int  # embedding rows the benchmark model needs
    pad_id: int
    eos_id: int

    @property
    def train_tokens(self) -> int:
        return sum(len(d.ids) for d in self.train)


def load_tokenizer():
    """The quickstart model's tokenizer if it was set up, else the offline test tokenizer."""
    if TOKENIZER_DIR.is_dir():
        from transformers import AutoTokenizer

        tok, name = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR)), "smollm2-135m-instruct"
    else:
        path = ROOT / "tests" / "fixtures" / "tiny_model.py"
        spec = importlib.util.spec_from_file_location("bench_tiny_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        tok, name = module.build_tokenizer(), "tiny offline BPE (tests/fixtures/tiny_model.py)"
    tok.pad_token = _pick_pad(tok)
    return tok, name


def _pick_pad(tok) -> str:
    """A special token other than eos: plain text never contains it, so `ids != pad` counts
    real tokens exactly, and eos keeps being a training target under pad-and-mask collators."""
    candidates = ([tok.pad_token] if tok.pad_token else []) + list(tok.all_special_tokens)
    candidates += [t.content for t in tok.added_tokens_decoder.values() if t.special]
    for token in candidates:
        if token != tok.eos_token:
            return token
    tok.add_special_tokens({"additional_special_tokens": ["<|bench_pad|>"]})
    return "<|bench_pad|>"


def source_records() -> tuple[str, list[str]]:
    """The quickstart corpus (all streams) if built, else Python's own pydoc topics."""
    files = sorted((QUICKSTART / "data").glob("*/*.jsonl"))
    if files:
        texts = [json.loads(line)["text"] for f in files for line in f.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        return "quickstart corpus (" + ", ".join(f.parent.name for f in files) + ")", texts
    from pydoc_data.topics import topics

    return "pydoc_data.topics", list(topics.values())


def token_streams(tokenizer, records: list[str], seed: int, tokens: int, heldout_tokens: int
                  ) -> tuple[TokenStream, TokenStream]:
    """(train, held-out) streams; every 10th record (after a seeded shuffle) is held out. Only
    about as much text as the budgets need is tokenized (cut_docs wraps around if short)."""
    order = list(records)
    random.Random(seed).shuffle(order)
    parts = ([r for i, r in enumerate(order) if i % 10], order[::10])
    return tuple(_tokenize("\n\n".join(_take_chars(p, 8 * n)), tokenizer)
                 for p, n in zip(parts, (tokens, heldout_tokens)))


def _take_chars(records: list[str], chars: int) -> list[str]:
    out, total = [], 0
    for r in records:
        if total >= chars:
            break
        out.append(r)
        total += len(r)
    return out


def _tokenize(text: str, tokenizer) -> TokenStream:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return TokenStream(text, list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]])


def sample_lengths(profile: str, budget: int, seed: int) -> list[int]:
    """Document lengths (tokens, eos included) summing to at most `budget` (within the minimum)."""
    kind, lo, hi, median, sigma = LENGTH_PROFILES[profile]
    rng = random.Random(f"{seed}:{profile}")
    out, total = [], 0
    while True:
        if kind == "lognormal":
            n = min(hi, max(lo, round(rng.lognormvariate(math.log(median), sigma))))
        else:
            n = rng.randint(lo, hi)
        if total + n > budget:
            if budget - total >= lo:
                out.append(budget - total)
            return out
        out.append(n)
        total += n


def cut_docs(stream: TokenStream, lengths: list[int], eos_id: int, prefix: str) -> list[Doc]:
    """Consecutive slices of the stream (wrapping around at its end), with the clean split
    points the mix stage would compute, so `draw_stream` sees realistic boundaries."""
    docs, pos = [], 0
    for i, n in enumerate(lengths):
        body = n - 1
        if pos + body > len(stream.ids):
            pos = 0
        offsets = stream.offsets[pos:pos + body]
        start = offsets[0][0]
        text = stream.text[start:offsets[-1][1]]
        local = [(max(0, a - start), max(0, b - start)) for a, b in offsets]
        docs.append(Doc(f"{prefix}-{i:05d}", stream.ids[pos:pos + body] + [eos_id], boundary_tokens(text, local)))
        pos += body
    return docs


def compact_vocab(tokenizer, doc_sets: list[list[Doc]]) -> tuple[list[list[Doc]], int]:
    """Renumber the token ids the corpus uses into a dense range (special ids keep their value).

    A 49k-row embedding/LM head would dominate every step of a tiny model and hide what batching
    changes (the transformer layers); a dense vocabulary keeps the layers the main cost, as in
    real models. Same ids for every variant, so the comparison is unaffected otherwise.
    """
    keep = max(tokenizer.all_special_ids) + 1
    used = sorted({t for docs in doc_sets for d in docs for t in d.ids if t >= keep})
    mapping = {t: keep + i for i, t in enumerate(used)}
    remap = [[Doc(d.doc_id, [mapping.get(t, t) for t in d.ids], d.boundaries) for d in docs] for docs in doc_sets]
    return remap, math.ceil((keep + len(used)) / 64) * 64


def build_corpora(tokenizer, profiles: list[str], tokens: int, heldout_tokens: int, seed: int,
                  compact: bool) -> list[Corpus]:
    """One corpus per length profile, all from the same text and with one shared vocabulary
    (so every profile trains the same model)."""
    _, records = source_records()
    train_stream, heldout_stream = token_streams(tokenizer, records, seed, tokens, heldout_tokens)
    eos = tokenizer.eos_token_id
    sets = []
    for p in profiles:
        sets.append(cut_docs(train_stream, sample_lengths(p, tokens, seed), eos, f"{p}-train"))
        sets.append(cut_docs(heldout_stream, sample_lengths(p, heldout_tokens, seed + 1), eos, f"{p}-heldout"))
    vocab = len(tokenizer)
    if compact:
        sets, vocab = compact_vocab(tokenizer, sets)
    return [Corpus(p, sets[2 * i], sets[2 * i + 1], vocab, tokenizer.pad_token_id, eos)
            for i, p in enumerate(profiles)]
