"""One forward per engine step: the running rows' decode tokens and the waiting prompts' chunks, packed.

A decode step of the running batch reads every weight of the model for a handful of tokens; a
prompt's prefill reads them all again. On a CPU both are a pass over ~0.5 GB of weights plus the
tokens' arithmetic, so running them as two forwards pays the weight pass twice. Here they are one
forward over a flat row `[decode tokens of B rows | prompt chunk 1 | prompt chunk 2 | ...]`: the
linear layers (nearly all of the compute) see every token once, and only attention is split by
part, in `ragged_attention`:

- the decode part is reshaped back to `[B, heads, 1, dim]` and attends to the batch's left-padded
  KV cache with the batch's padding mask (exactly the computation of a plain batched decode step);
- each prompt chunk attends causally to its own sequence's KV (the cached prefix, earlier chunks
  and itself).

Prompts of different lengths need no padding at all. The function is registered under `RAGGED`
through transformers' public `AttentionInterface`; when no step plan is active (any other call of
the model) it runs the model's original attention function unchanged.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

RAGGED = "domaintune_ragged"
_active = threading.local()  # the plan of the forward running on this thread (the engine thread)


@dataclass
class DecodePart:
    """The running batch: one token per row. `layers` are its KV cache's growing layers, `mask` the
    padding mask [rows, columns] including this step's column."""
    layers: list
    mask: object

    @property
    def tokens(self) -> int:
        return self.mask.shape[0]


@dataclass
class PromptPart:
    """`tokens` prompt tokens of one sequence, after `start` tokens already in its KV `layers`."""
    layers: list
    start: int
    tokens: int


class StepPlan:
    def __init__(self, parts: list):
        import torch

        self.parts = parts
        self.masks = []
        for part in parts:
            if isinstance(part, DecodePart):
                self.masks.append(part.mask.bool()[:, None, None, :])
            elif part.start:  # a chunk after cached tokens: causal with an offset, which is_causal cannot say
                self.masks.append(torch.ones(part.tokens, part.start + part.tokens, dtype=torch.bool)
                                  .tril(diagonal=part.start)[None, None])
            else:
                self.masks.append(None)  # a fresh prompt: sdpa's own causal kernel


def ragged_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = getattr(_active, "plan", None)
    if plan is None:  # any other forward of the model: transformers' sdpa, as before `install`
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    import torch

    layer, outputs, at = module.layer_idx, [], 0
    for part, mask in zip(plan.parts, plan.masks, strict=True):
        q, k, v = (t[:, :, at:at + part.tokens] for t in (query, key, value))
        at += part.tokens
        if isinstance(part, DecodePart):  # [1, heads, rows, dim] -> [rows, heads, 1, dim]
            q, k, v = (t.transpose(0, 2) for t in (q, k, v))
            keys, values = part.layers[layer].update(k, v)
            out, _ = sdpa_attention_forward(module, q, keys, values, mask, scaling=scaling)  # [rows, 1, heads, dim]
            outputs.append(out.transpose(0, 1))
        else:
            keys, values = part.layers[layer].update(k, v)
            out, _ = sdpa_attention_forward(module, q, keys, values, mask, scaling=scaling,
                                            is_causal=mask is None)
            outputs.append(out)  # [1, tokens, heads, dim]
    return torch.cat(outputs, dim=1), None


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def install(model) -> bool:
    """Route the model's attention through `ragged_attention`; False (model unchanged) when the model does not
    take custom attention functions or does not run transformers' sdpa attention, which the fallback stands in for."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    base = _base(model)
    if base.config._attn_implementation == RAGGED:  # a second engine on the same model
        return True
    if not getattr(base, "_supports_attention_backend", False) or base.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(RAGGED, ragged_attention)
    AttentionMaskInterface.register(RAGGED, sdpa_mask)  # other forwards build the mask sdpa would
    base.set_attn_implementation(RAGGED)
    return True


@contextmanager
def planned(plan: StepPlan):
    _active.plan = plan
    try:
        yield
    finally:
        _active.plan = None


# A 4D mask is passed through by transformers' mask builders untouched; the ragged attention reads the
# plan's masks instead, so this one only stops the model from building a [1, 1, N, N] mask of its own.
def placeholder_mask():
    import torch

    return torch.ones(1, 1, 1, 1, dtype=torch.bool)
