"""Add domain tokens to a tokenizer and give the model sensible embedding rows for them.

A domain term the base tokenizer splits into many pieces ("EBITDA" -> "EB", "IT", "DA") costs
context and makes the model spell it out every time. Adding it as one token helps only if its new
embedding row starts somewhere sensible: a random row is a word the model has never seen, and
(with tied or output embeddings) a row whose logit can dwarf every real token, so the loss jumps
on the first step and training spends its early updates repairing the damage. Starting each new
row as the *mean of the rows of the pieces it replaces* makes the new token begin by meaning
roughly what its spelling meant, and gives it an output logit in the range of its pieces' logits
(Hewitt 2021, "Initializing new word embeddings for pretrained language models").

Order of use (train stage): keep the untouched base tokenizer, `extend_tokenizer` a second copy,
then `resize_with_mean_init(model, extended, added, base)` before attaching an adapter.
"""

from __future__ import annotations

from domaintune.errors import ConfigError, ModelError

KEY = "model.new_tokens"


def validate_new_tokens(new_tokens: list[str]) -> None:
    """Every problem at once (DESIGN: report all), each naming `model.new_tokens[i]`."""
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for i, token in enumerate(new_tokens):
        if not isinstance(token, str) or not token.strip():
            problems.append(f"{KEY}[{i}] is empty or only whitespace ({token!r}); remove it")
        elif token in first_seen:
            problems.append(f"{KEY}[{i}] {token!r} repeats {KEY}[{first_seen[token]}]; "
                            f"list each token once")
        else:
            first_seen[token] = i
    if problems:
        raise ConfigError(problems)


def extend_tokenizer(tokenizer, new_tokens: list[str]) -> list[str]:
    """Add `new_tokens` as regular (non-special) tokens; return those actually added, in order.

    Tokens the vocabulary already has are skipped (they are already one id). Ids are assigned in
    list order after the current vocabulary, so the same list always gives the same ids.
    Regular, not special: special tokens are dropped by `decode(skip_special_tokens=True)` and
    would vanish from generated text.
    """
    validate_new_tokens(new_tokens)
    vocab = tokenizer.get_vocab()
    to_add = [t for t in new_tokens if t not in vocab]
    if not to_add:
        return []
    count = tokenizer.add_tokens(to_add, special_tokens=False)
    if count != len(to_add):  # a tokenizer that normalises two entries to one: ids would shift
        raise ModelError(f"the tokenizer added {count} of {len(to_add)} {KEY} ({to_add}); "
                         f"check for entries that differ only in case or Unicode normalisation")
    return to_add


def resize_with_mean_init(model, tokenizer, added: list[str], base_tokenizer) -> None:
    """Grow the embeddings to fit `tokenizer`; start each added row as the mean of its pieces' rows.

    `base_tokenizer` must be the ORIGINAL tokenizer (it defines the pieces). The input embedding
    is always set; the output embedding (lm_head) too when it is a separate matrix. Rows of the
    original vocabulary are left untouched.
    """
    import torch

    if base_tokenizer is tokenizer:
        raise ValueError("base_tokenizer must be the original tokenizer, not the extended one")
    _resize_exact(model, len(tokenizer))
    pieces = {token: _piece_ids(token, tokenizer, base_tokenizer) for token in added}
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    with torch.no_grad():
        _mean_init_rows(inp.weight, pieces, tokenizer)
        if out is not None and out.weight is not inp.weight:  # untied lm_head: its own rows
            _mean_init_rows(out.weight, pieces, tokenizer)
            if getattr(out, "bias", None) is not None:
                _mean_init_rows(out.bias, pieces, tokenizer)


def _resize_exact(model, n_tokens: int) -> None:
    """Resize to exactly `n_tokens` rows, never padded (an adapter must reload onto the same shape)
    and never shrunk: some checkpoints ship spare rows past the tokenizer (Qwen: 151,936 rows for
    ~151.6k tokens), and new tokens then land in those rows without any resize."""
    if n_tokens > model.get_input_embeddings().num_embeddings:
        # mean_resizing=False: every new row is overwritten below, and transformers' mean resizing
        # computes a hidden x hidden covariance we would throw away.
        model.resize_token_embeddings(n_tokens, mean_resizing=False)


def _piece_ids(token: str, tokenizer, base_tokenizer) -> list[int] | slice:
    ids = base_tokenizer(token, add_special_tokens=False).input_ids
    if tokenizer.convert_tokens_to_ids(token) in ids:
        raise ValueError(f"base_tokenizer already knows {token!r}: pass the tokenizer from before "
                         f"extend_tokenizer as base_tokenizer")
    # A normaliser may map the text to nothing (e.g. a zero-width character): fall back to the
    # mean of the whole original vocabulary, the neutral choice when there are no pieces.
    return ids or slice(0, len(base_tokenizer))


def _mean_init_rows(weight, pieces: dict[str, list[int] | slice], tokenizer) -> None:
    for token, ids in pieces.items():
        row = tokenizer.convert_tokens_to_ids(token)
        # the mean in fp32: summing many bf16 rows in bf16 loses precision
        weight[row] = weight[ids].float().mean(dim=0).to(weight.dtype)
