"""load_for_serving: full folders, base + LoRA adapter folders, and what it refuses."""

from __future__ import annotations

import shutil

import pytest
import torch

from domaintune.config import ModelConfig
from domaintune.errors import ModelError
from domaintune.serve.loading import load_for_serving


def test_an_adapter_folder_is_merged_into_its_base_with_the_same_logits(tmp_path, varied_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(varied_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(varied_model_dir).save_pretrained(adapter_dir)
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(varied_model_dir)(input_ids=ids).logits
    model, tokenizer = load_for_serving(adapter_dir, base=ModelConfig(base=str(varied_model_dir)))
    with torch.no_grad():
        got = model(input_ids=ids).logits
    assert not hasattr(model, "peft_config")  # merged: plain transformers modules at serving time
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)
    again, _ = load_for_serving(adapter_dir)  # the adapter's own base_model_name_or_path
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, expected, atol=1e-5)


def test_pickled_weights_and_non_model_folders_are_refused(tmp_path, varied_model_dir):
    with pytest.raises(ModelError, match="not a model folder"):
        load_for_serving(tmp_path)
    pickled = tmp_path / "pickled"
    shutil.copytree(varied_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickled"):
        load_for_serving(pickled)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    (adapter / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="safe_serialization"):
        load_for_serving(adapter)
