"""models.load_trained: every kind of folder our stages write (full, merged, adapter in a stage
folder, an sft-auto attempt, an export), with the tokenizer and chat template saved with it,
where the base of an adapter comes from, and the errors for folders it cannot load. Also the
loading check that refuses a checkpoint lacking weights (instead of leaving them random)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from domaintune.config import AdapterConfig, ModelConfig
from domaintune.errors import ModelError
from domaintune.models import load_model, load_trained, prepare_for_training, save_trained

TUNED_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}### assistant:{% endif %}")
IDS = torch.tensor([[5, 6, 7, 8, 9]])


def _logits(model) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(IDS, use_cache=False).logits


def _tuned_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = TUNED_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def lora(tiny_model_dir):
    """A LoRA adapter on the tiny model that really changes its logits, and those logits."""
    torch.manual_seed(0)
    model = prepare_for_training(load_model(ModelConfig(base=str(tiny_model_dir))), "lora",
                                 AdapterConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model, _logits(model)


def _stage_folder(run: Path, stage: str, rel: str, model, tok, manifest_extra: dict) -> Path:
    out = run / stage / rel
    save_trained(model, tok, out)
    (run / stage / "manifest.json").write_text(json.dumps({"stage": stage, "fingerprint": "f",
                                                           "outputs": {"model": rel}, **manifest_extra}))
    return out


def test_adapter_in_a_stage_folder_loads_onto_the_base_its_manifest_records(lora, tiny_model_dir, tmp_path):
    model, want = lora
    config = {"model": {"base": str(tiny_model_dir)}, "sft": {"method": "lora"}}
    path = _stage_folder(tmp_path / "runs" / "t", "sft", "model", model, _tuned_tokenizer(tiny_model_dir),
                         {"config": config})
    trained = load_trained(path)
    assert torch.allclose(_logits(trained.model), want, atol=1e-5)
    assert trained.tokenizer.chat_template == TUNED_TEMPLATE
    meta = trained.meta
    assert (meta.kind, meta.stage, meta.method, meta.base, meta.base_from) == (
        "adapter", "sft", "lora", str(tiny_model_dir), "manifest")
    assert (meta.tokenizer_from, meta.template_from) == ("saved", "saved")
    assert meta.manifest["outputs"] == {"model": "model"} and meta.export is None
    assert "adapter on" in meta.describe() and "stage sft (lora)" in meta.describe()


def test_an_sft_auto_attempt_finds_the_manifest_that_lists_it(lora, tiny_model_dir, tmp_path):
    model, want = lora
    manifest = {"config": {"model": {"base": str(tiny_model_dir)}, "sft": {"method": "auto"}},
                "metrics": {"method": "lora"}}
    path = _stage_folder(tmp_path, "sft", "attempts/lora/model", model, _tuned_tokenizer(tiny_model_dir), manifest)
    trained = load_trained(path)
    assert (trained.meta.stage, trained.meta.method, trained.meta.base_from) == ("sft", "lora", "manifest")
    assert torch.allclose(_logits(trained.model), want, atol=1e-5)


def test_a_manifest_that_lists_another_folder_is_not_this_folders(lora, tiny_model_dir, tmp_path):
    model, _ = lora
    path = _stage_folder(tmp_path, "sft", "adapter", model, _tuned_tokenizer(tiny_model_dir), {})
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    manifest["outputs"] = {"model": "model"}  # sft/adapter is an intermediate, not the stage's model
    (tmp_path / "sft" / "manifest.json").write_text(json.dumps(manifest))
    trained = load_trained(path)
    assert trained.meta.manifest is None and trained.meta.stage is None
    assert trained.meta.base_from == "adapter_config"  # peft's base_model_name_or_path
    assert trained.meta.method == "lora"  # from adapter_config.json's peft_type


def test_an_explicit_base_wins(lora, tiny_model_dir, tmp_path):
    model, want = lora
    path = tmp_path / "adapter"
    save_trained(model, _tuned_tokenizer(tiny_model_dir), path)
    trained = load_trained(path, base=ModelConfig(base=str(tiny_model_dir)))
    assert trained.meta.base_from == "argument" and torch.allclose(_logits(trained.model), want, atol=1e-5)


def test_an_export_folder_records_its_base_and_method(lora, tiny_model_dir, tmp_path):
    model, want = lora
    path = tmp_path / "export" / "model"
    save_trained(model, _tuned_tokenizer(tiny_model_dir), path)
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = "/moved/elsewhere"  # the export record must win
    (path / "adapter_config.json").write_text(json.dumps(adapter_config))
    (path / "domaintune_export.json").write_text(json.dumps({"source_stage": "sft", "method": "lora",
                                                             "model": {"base": str(tiny_model_dir)}}))
    trained = load_trained(path)
    assert (trained.meta.stage, trained.meta.method, trained.meta.base_from) == ("export", "lora", "export")
    assert torch.allclose(_logits(trained.model), want, atol=1e-5)


def test_an_adapter_that_names_no_base_is_a_clear_error(lora, tiny_model_dir, tmp_path):
    model, _ = lora
    path = tmp_path / "adapter"
    save_trained(model, _tuned_tokenizer(tiny_model_dir), path)
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = None
    (path / "adapter_config.json").write_text(json.dumps(adapter_config))
    with pytest.raises(ModelError, match="does not say which base model"):
        load_trained(path)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelError, match="is not a model folder.*domaintune models import-gguf"):
        load_trained(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        load_trained(tmp_path / "missing")


def _weights_only(tiny_model_dir: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, out / name)
    return out


def test_a_folder_without_a_tokenizer_takes_the_bases(tiny_model_dir, tmp_path):
    path = _weights_only(tiny_model_dir, tmp_path / "full")
    with pytest.raises(ModelError, match="no tokenizer saved with it"):
        load_trained(path)
    trained = load_trained(path, base=ModelConfig(base=str(tiny_model_dir)))
    assert (trained.meta.kind, trained.meta.tokenizer_from, trained.meta.template_from) == ("full", "base", "base")
    assert trained.tokenizer.chat_template and trained.tokenizer.pad_token is not None


def test_a_saved_tokenizer_without_a_template_takes_only_the_bases_template(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    path = _weights_only(tiny_model_dir, tmp_path / "full")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_tokens(["<domain_tok>"])
    tok.chat_template = None
    tok.save_pretrained(path)
    assert not AutoTokenizer.from_pretrained(path).chat_template
    trained = load_trained(path, base=ModelConfig(base=str(tiny_model_dir)))
    assert (trained.meta.tokenizer_from, trained.meta.template_from) == ("saved", "base")
    assert "<domain_tok>" in trained.tokenizer.get_vocab()  # the saved tokenizer, with the base's template
    assert trained.tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    assert load_trained(path).meta.template_from == "none"  # no base known: nothing to fall back to


def test_safetensors_only_and_no_remote_code(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = {}
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    load_trained(tiny_model_dir)
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False


# --------------------------------------------------------------------------- missing weights (bug 9)
@pytest.fixture(scope="module")
def missing_a_weight(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with one tensor cut out of its safetensors (config.json unchanged)."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(tiny_model_dir, out)
    weights = load_file(out / "model.safetensors")
    del weights["model.layers.0.mlp.down_proj.weight"]
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_a_base_missing_weights_is_refused_naming_them(missing_a_weight):
    with pytest.raises(ModelError) as err:
        load_model(ModelConfig(base=str(missing_a_weight)))
    message = str(err.value)
    assert f"model.base='{missing_a_weight}'" in message
    assert "model.layers.0.mlp.down_proj.weight" in message and "1 weight(s)" in message
    assert "config.json matches its weights" in message  # the fix


def test_a_trained_folder_missing_weights_is_refused(missing_a_weight):
    with pytest.raises(ModelError, match="model.layers.0.mlp.down_proj.weight"):
        load_trained(missing_a_weight)


def test_a_stale_model_record_stops_an_adapter_but_not_a_full_model(lora, tiny_model_dir, tmp_path):
    stale = {"config": {"model": {"base": str(tiny_model_dir), "renamed_key": True}}}
    full = tmp_path / "full" / "train" / "model"
    shutil.copytree(tiny_model_dir, full)
    (full.parent / "manifest.json").write_text(json.dumps({"stage": "train", "outputs": {"model": "model"}, **stale}))
    trained = load_trained(full)
    assert (trained.meta.kind, trained.meta.stage, trained.meta.base) == ("full", "train", None)

    model, _ = lora
    adapter = _stage_folder(tmp_path / "adapter", "train", "model", model, _tuned_tokenizer(tiny_model_dir), stale)
    with pytest.raises(ModelError, match="(?s)no longer validates.*renamed_key.*re-run the stage"):
        load_trained(adapter)
