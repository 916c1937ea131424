"""The per-document sdpa path for packed rows: same logits and gradients as transformers' 4D
block-diagonal mask, the model's own implementation restored afterwards, and everything that is
not a fresh packed forward (padding mask, KV cache) left on transformers' sdpa path."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from domaintune.training.collate import collate_packed, token_losses
from domaintune.training.packed_attention import PACKED_SDPA, packed_attention, segment_bounds

ROWS = [{"input_ids": [5, 17, 42, 99, 3, 8, 11, 7, 7, 250, 31], "segment_lengths": [7, 4], "segment_streams": [0, 1]},
        {"input_ids": [100, 101, 102, 64, 2, 3], "segment_lengths": [3, 3], "segment_streams": [1, 0]}]


@pytest.fixture()
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")


def _loss_and_grads(model, choice):
    batch = collate_packed(ROWS, pad_id=0)
    model.zero_grad()
    with packed_attention(model, choice):
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    losses = token_losses(logits, batch["labels"])
    losses.sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_segment_bounds_split_rows_where_positions_restart():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    assert segment_bounds(pos) == [[(0, 3), (3, 5), (5, 6)], [(0, 6)]]


def test_segments_match_the_block_diagonal_mask(model):
    mask_logits, mask_grads = _loss_and_grads(model, "mask")
    seg_logits, seg_grads = _loss_and_grads(model, "segments")
    assert torch.allclose(mask_logits, seg_logits, atol=1e-5)
    for name, grad in mask_grads.items():
        assert torch.allclose(grad, seg_grads[name], atol=1e-5), name


def test_implementation_is_switched_only_inside_and_restored(model):
    with packed_attention(model, "segments"):
        assert model.config._attn_implementation == PACKED_SDPA
    assert model.config._attn_implementation == "sdpa"
    with packed_attention(model, "mask"):
        assert model.config._attn_implementation == "sdpa"


def test_padding_mask_and_generation_keep_transformers_sdpa(model):
    x = torch.tensor([[0, 0, 5, 17, 42], [5, 17, 42, 99, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        ref = model(input_ids=x, attention_mask=mask).logits
        ref_gen = model.generate(x[1:], max_new_tokens=4, do_sample=False)
        with packed_attention(model, "segments"):
            got = model(input_ids=x, attention_mask=mask).logits
            got_gen = model.generate(x[1:], max_new_tokens=4, do_sample=False)
    assert torch.allclose(ref[mask.bool()], got[mask.bool()], atol=1e-5)
    assert torch.equal(ref_gen, got_gen)


def test_unknown_choice_is_rejected(model):
    with pytest.raises(ValueError, match="packed attention must be one of"), packed_attention(model, "flash"):
        pass
