"""Exact packing: a document's loss and gradients inside a packed batch equal those computed
with the document alone (no attention across document boundaries), on both attention paths for
packed rows: transformers' 4D block-diagonal mask and the per-document sdpa calls
(training/packed_attention.py, the default)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from domaintune.training.collate import IGNORE, collate_packed, token_losses
from domaintune.training.packed_attention import CHOICES, packed_attention

DOCS = [[5, 17, 42, 99, 3, 8, 11], [7, 7, 250, 31], [100, 101, 102, 103, 104, 105, 106, 107, 9], [64, 2, 3]]


def _alone_loss_sum(model, ids):
    x = torch.tensor([ids])
    logits = model(input_ids=x, use_cache=False).logits
    labels = x.clone()
    labels[0, 0] = IGNORE
    return token_losses(logits, labels).sum()


def _packed_rows():
    # two rows: [doc0 | doc1] and [doc2 | doc3], different total lengths -> padding in row 2
    return [{"input_ids": DOCS[0] + DOCS[1], "segment_lengths": [7, 4], "segment_streams": [0, 1]},
            {"input_ids": DOCS[2] + DOCS[3], "segment_lengths": [9, 3], "segment_streams": [1, 0]}]


@pytest.fixture(scope="module", params=CHOICES)
def model(tiny_model_dir, request):
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    with packed_attention(m, request.param):
        yield m


def _per_doc_packed(model):
    batch = collate_packed(_packed_rows(), pad_id=0)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    losses = token_losses(logits, batch["labels"])
    bounds = [(0, 0, 7), (0, 7, 11), (1, 0, 9), (1, 9, 12)]
    # loss at index t-1 scores token t: a segment [a, b) owns shifted positions [a, b-1)
    return [losses[r, a:b - 1].sum() for r, a, b in bounds]


def test_packed_loss_equals_per_document_loss(model):
    with torch.no_grad():
        packed = _per_doc_packed(model)
        alone = [_alone_loss_sum(model, d) for d in DOCS]
    for p, a in zip(packed, alone):
        assert abs(float(p) - float(a)) < 1e-4


def test_packed_gradients_equal_per_document_gradients(model):
    model.zero_grad()
    sum(_per_doc_packed(model)).backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(_alone_loss_sum(model, d) for d in DOCS).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(packed_grads[n], p.grad, atol=1e-4), n


def test_without_position_restart_documents_would_leak(model):
    """Guard the guard: plain concatenation (no position restart) changes later documents' loss."""
    with torch.no_grad():
        x = torch.tensor([DOCS[0] + DOCS[1]])
        labels = x.clone()
        labels[0, 0] = IGNORE
        labels[0, 7] = IGNORE
        leaky = token_losses(model(input_ids=x, use_cache=False).logits, labels)[0, 7:10].sum()
        assert abs(float(leaky) - float(_alone_loss_sum(model, DOCS[1]))) > 1e-3
