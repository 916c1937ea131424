"""Constrained decoding for the CPU engine: a request's `json_schema` becomes a per-sequence token mask.

llguidance (the Rust grammar engine vLLM, SGLang and llama.cpp use) compiles the schema and computes, per
decode step, which tokens can continue a valid value; tokens outside it get -inf before sampling, so
the sequence is a valid instance of the schema whatever the model's weights prefer. Only the rows of
constrained sequences are touched: the other rows of the same batch decode exactly as before.
Why llguidance: it computes masks lazily per step (no up-front index over the vocabulary, so a schema
that arrives with a request costs milliseconds), ships as one wheel with no dependencies, and works
on CPU through its public API (xgrammar pulls in triton; lm-format-enforcer walks the vocabulary in Python).
"""

from __future__ import annotations

import json

from domaintune.extras import require

# Compact JSON (no free whitespace): a weak model cannot wander in whitespace until max_tokens.
COMPILE_OPTIONS = {"whitespace_flexible": False}


def _llguidance():
    return require("llguidance", "serve", "constrained decoding (a tool_choice that forces a call)")


def schema_grammar(schema: dict) -> str:
    """The llguidance grammar of a JSON schema; ValueError naming what llguidance refuses."""
    llg = _llguidance()
    grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=COMPILE_OPTIONS)
    failed, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed or messages:  # a warning means a keyword would be ignored: refuse rather than loosen
        raise ValueError("; ".join(messages) or "the schema does not compile")
    return grammar


class GuideFactory:
    """One per engine: the tokenizer's byte view, built once (about a second for a real vocabulary)."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._llg_tokenizer = None

    def guide(self, schema: dict) -> SchemaGuide:
        llg = _llguidance()
        if self._llg_tokenizer is None:
            import llguidance.hf

            self._llg_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
        matcher = llg.LLMatcher(self._llg_tokenizer, schema_grammar(schema), log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return SchemaGuide(matcher)


class SchemaGuide:
    """The grammar state of one sequence: mask the next logits, then advance by the chosen token."""

    def __init__(self, matcher):
        self.matcher = matcher

    def mask(self, logits):
        """`logits` (1-D) with every token that cannot continue a valid value set to -inf (a new tensor)."""
        import torch

        allowed = torch.frombuffer(bytearray(self.matcher.compute_logit_bias()), dtype=torch.uint8) != 0
        if allowed.numel() < logits.shape[-1]:  # logits padded past the tokenizer: those ids are never valid
            allowed = torch.cat([allowed, allowed.new_zeros(logits.shape[-1] - allowed.numel())])
        return logits.masked_fill(~allowed[:logits.shape[-1]], float("-inf"))

    def advance(self, token: int) -> None:
        self.matcher.consume_token(token)  # a masked choice is always accepted; errors surface in `failed`

    @property
    def complete(self) -> bool:
        """The value is finished: nothing but EOS may follow, so the sequence ends here."""
        return self.matcher.is_stopped()

    @property
    def failed(self) -> str | None:
        return self.matcher.get_error() if self.matcher.is_error() else None
