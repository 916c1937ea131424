"""Settings that were hard-coded: activation checkpointing (every training section) and align precision."""

import pytest
import torch

from domaintune import models
from domaintune.config import AdapterConfig


def _checkpointing(model) -> bool:
    inner = model.base_model.model if hasattr(model, "peft_config") else model
    if hasattr(inner, "is_activation_checkpointing"):  # transformers >= 5 renamed it
        return bool(inner.is_activation_checkpointing)
    return bool(inner.is_gradient_checkpointing)


def _grads(tiny_model_dir, method: str, checkpointing: bool) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)  # the same adapter initialisation both times
    model = models.prepare_for_training(model, method, AdapterConfig(r=4, dropout=0.0),
                                        activation_checkpointing=checkpointing)
    assert _checkpointing(model) == checkpointing
    model.train()
    ids = torch.arange(3, 35).reshape(2, 16)
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_activation_checkpointing_gives_the_same_gradients(tiny_model_dir, method):
    off, on = _grads(tiny_model_dir, method, False), _grads(tiny_model_dir, method, True)
    assert off.keys() == on.keys() and off
    for name in off:
        torch.testing.assert_close(on[name], off[name], rtol=1e-5, atol=1e-6, msg=name)


def test_activation_checkpointing_is_switched_on_in_the_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = models.prepare_for_training(model, "lora", AdapterConfig(r=4), activation_checkpointing=True)
    assert _checkpointing(lora)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = models.prepare_for_training(fresh, "lora", AdapterConfig(r=4))
    assert not _checkpointing(plain)


def test_align_precision_and_checkpointing_reach_the_trainer_arguments(tmp_path):
    from domaintune.align import dpo, reward

    s = dpo.DPOSettings(beta=0.1, sft_weight=0.0, epochs=1, max_steps=2, lr=5e-3, batch_size=4, grad_accum=1,
                        max_len=64, eval_every=None, seed=0, use_cpu=True, precision="bf16",
                        activation_checkpointing=True)
    args = dpo.dpo_args(s, tmp_path / "dpo", {"save_strategy": "no"}, has_eval=False)
    assert args.bf16 and not args.fp16 and args.gradient_checkpointing
    r = reward.RewardSettings(1, 2, 1e-3, 4, 64, 0, True, precision="bf16")
    rargs = reward.reward_args(r, tmp_path / "rm", {"save_strategy": "no"})
    assert rargs.bf16 and not rargs.gradient_checkpointing  # off unless asked: trl's default is on
    fp32 = reward.reward_args(reward.RewardSettings(1, 2, 1e-3, 4, 64, 0, True), tmp_path / "rm2", {})
    assert not fp32.bf16 and not fp32.fp16
