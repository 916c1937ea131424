import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune.align import reward
from domaintune.config import AdapterConfig
from fixtures.preferences import separable_rows

pytestmark = pytest.mark.slow  # trains with trl


def _settings(**kw):
    base = dict(epochs=1, max_steps=30, lr=3e-3, batch_size=8, max_len=64, seed=0, use_cpu=True)
    return reward.RewardSettings(**{**base, **kw})


def test_reward_model_learns_a_separable_preference(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rm = reward.reward_model_from(lm, tok, seed=0)
    train, held_out = separable_rows(64, seed=0), separable_rows(24, seed=1)
    before = reward.pair_accuracy(reward.pair_margins(rm, tok, held_out, 64))
    trainer = reward.build_reward_trainer(rm, tok, train, _settings(), tmp_path, {"save_strategy": "no"}, [],
                                          peft_config=reward.reward_peft_config(AdapterConfig(r=8, alpha=16)))
    trainer.train()
    after = reward.pair_accuracy(reward.pair_margins(trainer.model, tok, held_out, 64))
    assert after > 0.8, (before, after)


def test_reward_model_copies_the_backbone(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rm = reward.reward_model_from(lm, tok, seed=0)
    for name, tensor in lm.base_model.state_dict().items():
        assert torch.equal(rm.base_model.state_dict()[name], tensor), name
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id


def test_mc_dropout_gives_zero_margin_for_identical_answers(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rm = reward.reward_model_from(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok, seed=0)
    row = separable_rows(1)[0]
    same = {**row, "rejected": row["chosen"]}
    samples = reward.pair_margins(rm, tok, [row, same], 64, passes=6, dropout=0.3)
    assert samples.shape == (2, 6)
    assert samples[1].abs().max() < 1e-4  # shared mask per pass: identical answers never differ
    assert samples[0].std() > 0  # the passes do vary for a real difference
