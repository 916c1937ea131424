"""`domaintune chat`: one-shot answers from a merged folder and from an adapter-only export (loaded
onto the base its domaintune_export.json records), and a clear message for a folder that is not
a model."""

from __future__ import annotations

import json

import pytest
import torch

from domaintune import generation, models
from domaintune.config import AdapterConfig, ModelConfig
from fixtures.cli import invoke


def _adapter_export(tiny_model_dir, out):
    """What `domaintune export` writes with export.merge: false."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model = models.prepare_for_training(models.load_model(ModelConfig(base=str(tiny_model_dir))), "lora",
                                        AdapterConfig(r=4))
    models.save_trained(model, AutoTokenizer.from_pretrained(tiny_model_dir), out)
    (out / "domaintune_export.json").write_text(json.dumps({
        "base_model": str(tiny_model_dir), "source_stage": "sft", "merged": False,
        "model": ModelConfig(base=str(tiny_model_dir)).model_dump(mode="json")}))
    return out


@pytest.fixture
def replies(monkeypatch):
    """Record what chat generates with (the real generate runs too) and mark its answer."""
    seen = []
    real = generation.stream_reply

    def spy(model, tokenizer, messages, *args, **kwargs):
        seen.append((model, tokenizer, list(messages)))
        yield from real(model, tokenizer, messages, *args, **kwargs)
        yield "<END-OF-ANSWER>"

    monkeypatch.setattr(generation, "stream_reply", spy)
    return seen


def test_chat_one_shot_on_a_merged_folder(tiny_model_dir, replies):
    result = invoke("chat", str(tiny_model_dir), "--prompt", "What is the wire fee?", "--max-new-tokens", "3",
                    "--device", "cpu")
    assert "<END-OF-ANSWER>" in result.output
    (model, tokenizer, messages), = replies
    assert messages == [{"role": "user", "content": "What is the wire fee?"}] and tokenizer.chat_template


def test_chat_one_shot_on_an_adapter_only_export(tiny_model_dir, tmp_path, replies):
    from peft import PeftModel

    out = _adapter_export(tiny_model_dir, tmp_path / "export" / "model")
    assert not (out / "config.json").exists()
    result = invoke("chat", str(out), "--prompt", "What is the wire fee?", "--max-new-tokens", "3",
                    "--device", "cpu")
    assert "<END-OF-ANSWER>" in result.output
    (model, _, _), = replies
    assert isinstance(model, PeftModel) and not model.training  # the adapter, on its recorded base


def test_chat_on_a_folder_that_is_no_model_says_so(tmp_path):
    result = invoke("chat", str(tmp_path), "--prompt", "hi", code=2)
    out = " ".join(result.output.split())
    assert "is not a model folder" in out and "Traceback" not in result.output
    assert "export one with" not in out  # the old advice: the very command that wrote an adapter-only export
