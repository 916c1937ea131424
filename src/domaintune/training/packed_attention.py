"""Attention for packed rows that keeps sdpa's efficient causal kernel.

A packed row (training/collate.py) holds several documents whose position ids restart at 0.
With `attn_implementation="sdpa"`, transformers turns those position ids into a 4D block-diagonal
boolean mask ([batch, 1, L, L]); with an explicit mask, sdpa on CPU runs a kernel that materializes
the [heads, L, L] score and probability matrices of every layer for the backward pass (GBs for one
1,024-token row of a 30-layer model). This module registers an attention function under
`PACKED_SDPA` (transformers' public `AttentionInterface` / `AttentionMaskInterface`) that skips
the mask and instead splits each row at its document boundaries, calling
`scaled_dot_product_attention(..., is_causal=True)` per document: the same block-diagonal causal
attention, computed by the flash kernel, with no cross-document scores computed at all.

Anything other than a fresh, unpadded packed forward (a 2D padding mask, a KV cache, q != kv
length) goes to transformers' own sdpa path unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

PACKED_SDPA = "domaintune_packed_sdpa"
CHOICES = ("segments", "mask")  # config values: per-document sdpa calls, or transformers' 4D mask


def segment_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """[(start, end), ...] per row: a document starts wherever the position id does not follow
    the previous one by 1 (the rule transformers uses to detect packing)."""
    pos = position_ids.detach()
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    width = pos.shape[1]
    out = []
    for row in starts.cpu():
        idx = row.nonzero().flatten().tolist()
        out.append(list(zip(idx, idx[1:] + [width])))
    return out


def _packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                         scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is not None or q_len != kv_len or q_len == 1 or not causal or position_ids is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # the CPU flash kernel takes equal head counts
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    rows = []
    for b, bounds in enumerate(segment_bounds(position_ids.expand(query.shape[0], -1))):
        parts = [torch.nn.functional.scaled_dot_product_attention(
            query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
            dropout_p=dropout, scale=scaling, is_causal=True) for s, e in bounds]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _packed_mask(*args, **kwargs):
    """No mask for a fresh, unpadded forward (the attention function splits documents itself);
    transformers' sdpa mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    fresh = (kwargs.get("attention_mask") is None and kwargs.get("q_length") == kwargs.get("kv_length")
             and not kwargs.get("q_offset") and not kwargs.get("kv_offset"))
    return None if fresh else sdpa_mask(*args, **kwargs)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, _packed_sdpa_forward)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_mask)


def _base(model):
    """The transformers model under accelerate / PEFT wrappers."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


@contextmanager
def packed_attention(model, choice: str):
    """Within the block, a model running on sdpa uses the per-document path (`choice="segments"`);
    `"mask"` or any other implementation (eager, flash_attention_2, which has its own varlen path)
    is left as it is. The model's implementation is restored afterwards, so what is saved or
    served is unchanged."""
    if choice not in CHOICES:
        raise ValueError(f"packed attention must be one of {CHOICES}, got {choice!r}")
    base = _base(model)
    before = getattr(getattr(base, "config", None), "_attn_implementation", None)  # plain torch modules: none
    if choice != "segments" or before != "sdpa":
        yield
        return
    register()
    base.set_attn_implementation(PACKED_SDPA)
    try:
        yield
    finally:
        base.set_attn_implementation(before)
