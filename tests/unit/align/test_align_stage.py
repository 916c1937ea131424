"""The align stage's model hand-over: it starts from the previous model stage (adapter merged, so
DPO's reference can be "adapter disabled") and saves what eval/export can load."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune import models
from domaintune.align import stage as align_stage
from domaintune.artifacts import RunDir
from domaintune.config import AdapterConfig, Config

pytestmark = pytest.mark.slow  # runs the align stage (trains reward models and DPO)


def _cfg(tiny_model_dir, tmp_path, with_train: bool) -> Config:
    raw = {"name": "t", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tiny_model_dir)},
           "align": {"data": {"domain": ["d.jsonl"]}}}
    if with_train:
        raw |= {"data": {"sources": [{"path": "docs", "stream": "domain"}]},
                "mix": {"mixture": {"domain": 1}, "tokens": 1000}}
    return Config.model_validate(raw)


def _fake_train_stage(cfg, tiny_model_dir) -> RunDir:
    """A finished train stage whose model is a (non-trivial) LoRA adapter on the tiny model."""
    run_dir = RunDir(cfg.run_path)
    torch.manual_seed(0)
    model = models.prepare_for_training(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "lora",
                                        AdapterConfig(r=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    models.save_trained(model, AutoTokenizer.from_pretrained(tiny_model_dir), run_dir.stage_dir("train") / "model")
    run_dir.write_manifest("train", {"fingerprint": "x", "outputs": {"model": "model"}})
    return run_dir


def test_starts_from_the_merged_previous_stage_and_saves_full_weights(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, with_train=True)
    run_dir = _fake_train_stage(cfg, tiny_model_dir)
    model, tokenizer, start = align_stage._start_model(cfg, run_dir, "cpu")
    prev = start.stage
    assert prev == "train" and not hasattr(model, "peft_config")  # merged: a plain model
    ids = torch.tensor([[5, 6, 7, 8]])
    trained = models.load_trained(run_dir.root / "train" / "model", base=cfg.model).model
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        want, got = trained(ids, use_cache=False).logits, model(ids, use_cache=False).logits
        assert torch.allclose(want, got, atol=1e-5)
        assert not torch.allclose(base(ids, use_cache=False).logits, got, atol=1e-3)  # the adapter mattered

    out = tmp_path / "align"
    align_stage._save_model(model, tokenizer, out, prev)
    assert not (out / "model" / "adapter_config.json").exists()  # an adapter on the *base* would be wrong
    reloaded = models.load_trained(out / "model", base=cfg.model).model
    with torch.no_grad():
        assert torch.allclose(reloaded(ids, use_cache=False).logits, got, atol=1e-5)


def test_starts_from_the_base_model_without_a_previous_stage(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, with_train=False)
    model, tokenizer, start = align_stage._start_model(cfg, RunDir(cfg.run_path), "cpu")
    assert start.stage is None and tokenizer.chat_template
    assert json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"] == model.config.hidden_size
