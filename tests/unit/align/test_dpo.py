import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune.align import dpo
from domaintune.config import AdapterConfig
from domaintune.models import build_peft_config
from fixtures.preferences import separable_rows

pytestmark = pytest.mark.slow  # trains with trl


def _settings(**kw):
    base = dict(beta=0.1, sft_weight=0.0, epochs=1, max_steps=12, lr=5e-3, batch_size=4, grad_accum=1,
                max_len=64, eval_every=None, seed=0, use_cpu=True)
    return dpo.DPOSettings(**{**base, **kw})


def _trainer(tiny_model_dir, tmp_path, **kw):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return dpo.build_dpo_trainer(model, tok, separable_rows(32), separable_rows(8, seed=1), _settings(**kw), tmp_path,
                                 {"save_strategy": "no"}, [], peft_config=build_peft_config(AdapterConfig(r=8)))


def test_dpo_reward_margin_rises_with_lora_reference_adapter_disabled(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path)
    assert trainer.ref_model is None  # reference = the same weights with the adapter disabled
    before = dpo.heldout_metrics(trainer)
    assert abs(before["eval_rewards/margins"]) < 1e-4  # a fresh adapter is the reference
    trainer.train()
    after = dpo.heldout_metrics(trainer)
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"] + 0.05
    assert after["eval_rewards/accuracies"] > 0.5


def test_sft_mixing_uses_trl_multi_loss():
    assert dpo.loss_mix(0.0) == {"loss_type": ["sigmoid"]}
    assert dpo.loss_mix(0.5) == {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}


def test_dpo_with_sft_mixing_trains(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, sft_weight=1.0, max_steps=2)
    assert trainer.args.loss_type == ["sigmoid", "sft"] and trainer.args.loss_weights == [1.0, 1.0]
    trainer.train()
    assert trainer.state.global_step == 2
