"""Exact SFT packing: each conversation's assistant-token loss inside a packed row equals its
loss computed alone (no attention across conversations; masks follow their tokens)."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune.instruct.masking import encode_conversation
from domaintune.sft.data import Example, pack_examples, to_dataset
from domaintune.training.collate import IGNORE, collate_packed, packed_rows, token_losses

CONVS = [[("What is the wire fee?", "35 dollars.")],
         [("SWIFT code?", "HRVBUS6S."), ("And the hotline?", "0800-462-7000.")],
         [("海港银行的热线？", "0800-462-7000。")],
         [("ATM limit?", "1000 dollars a day.")]]


def _messages(turns):
    return [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]


def _alone(model, ex):
    x = torch.tensor([ex.ids])
    labels = x.clone()
    labels[0, torch.tensor(ex.mask) == 0] = IGNORE
    labels[0, 0] = IGNORE
    return token_losses(model(input_ids=x, use_cache=False).logits, labels).sum()


def test_packed_sft_loss_equals_each_conversation_alone(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    examples = []
    for i, turns in enumerate(CONVS):
        enc = encode_conversation(tok, _messages(turns))
        examples.append(Example(enc.input_ids, enc.loss_mask, i))
    rows = pack_examples(examples, 96, packed=True, seed=0)
    assert any(len(r) > 1 for r in rows)  # really packed
    ds = to_dataset(rows, 96)
    batch = collate_packed(packed_rows(ds, list(range(len(ds)))), tok.pad_token_id)
    with torch.no_grad():
        losses = token_losses(model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                    use_cache=False).logits, batch["labels"])
        for r, row in enumerate(rows):
            start = 0
            for ex in row:
                n = len(ex.ids)
                packed = losses[r, start:start + n - 1].sum()
                assert abs(float(packed) - float(_alone(model, ex))) < 1e-4
                start += n
