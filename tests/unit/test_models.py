"""domaintune.models on the tiny random Llama fixture: loading and its safety defaults, LoRA
set-up, adapter save/load/merge round trips, device resolution, and GGUF import (library + CLI).

Everything runs offline on CPU; the GGUF file is written from the tiny HF model by
tests/fixtures/tiny_gguf.py, so the imported model must reproduce that model's logits exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from domaintune.config import AdapterConfig, ModelConfig
from domaintune.errors import ModelError
from domaintune.models import (
    ADAPTER_CONFIG,
    _common_kwargs,
    build_peft_config,
    import_gguf,
    is_adapter_dir,
    load_model,
    load_tokenizer,
    load_trained,
    merge_and_save,
    model_inputs,
    prepare_for_training,
    resolve_device,
    save_trained,
    trainable_parameters,
)
from fixtures.tiny_gguf import write_tiny_llama_gguf

PROBE = "The bank's wire transfer fee is 15 USD. 海港银行的手续费。def f(x): return x"
ATTN_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEAR = ("gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------- helpers / fixtures
@pytest.fixture(scope="module")
def cfg(tiny_model_dir) -> ModelConfig:
    return ModelConfig(base=str(tiny_model_dir))


@pytest.fixture(scope="module")
def tokenizer(cfg):
    return load_tokenizer(cfg)


@pytest.fixture(scope="module")
def probe_ids(tokenizer) -> torch.Tensor:
    ids = tokenizer(PROBE, return_tensors="pt").input_ids
    assert ids.shape[1] > 8
    return ids


@pytest.fixture(scope="module")
def reference_logits(tiny_model_dir, probe_ids) -> torch.Tensor:
    """Logits of the tiny model loaded with plain transformers (the ground truth)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True, dtype=torch.float32)
    return logits_of(model, probe_ids)


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(ids, use_cache=False).logits.float()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def pickled_only_dir(tiny_model_dir: Path, out: Path) -> Path:
    """The tiny model as a pickled `pytorch_model.bin` + config.json, with no safetensors at all.

    (transformers 5 ignores `save_pretrained(safe_serialization=False)` and still writes
    model.safetensors, so the pickle is written with torch.save like an old checkpoint.)
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    out.mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", out / "config.json")
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    assert not list(out.glob("*.safetensors"))
    return out


# --------------------------------------------------------------------------- loading
def test_load_tokenizer_and_model_from_local_folder(cfg, tokenizer, probe_ids, reference_logits):
    model = load_model(cfg)
    assert model.config.model_type == "llama"
    assert next(model.parameters()).dtype == torch.float32
    assert next(model.parameters()).device.type == "cpu"
    logits = logits_of(model, probe_ids)
    assert logits.shape == (1, probe_ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert max_diff(logits, reference_logits) == 0.0
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id is not None
    assert tokenizer.chat_template  # the template travels with the tokenizer


def test_trust_remote_code_defaults_off_and_only_safetensors(cfg, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert ModelConfig(base="x").trust_remote_code is False
    assert ModelConfig(base="x").allow_pickle is False
    assert _common_kwargs(cfg)["trust_remote_code"] is False

    seen: dict[str, dict] = {}
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def spy(name, real):
        def wrapper(*args, **kwargs):
            seen[name] = kwargs
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy("model", real_model))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy("tok", real_tok))
    load_tokenizer(cfg)
    load_model(cfg)
    assert seen["tok"]["trust_remote_code"] is False
    assert seen["model"]["trust_remote_code"] is False
    assert seen["model"]["use_safetensors"] is True


def test_pad_token_falls_back_to_eos(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir, folder)
    tok_cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg.pop("pad_token")
    tok_cfg_path.write_text(json.dumps(tok_cfg))

    tok = load_tokenizer(ModelConfig(base=str(folder)))
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id == tok.eos_token_id
    batch = tok(["a", "a longer line"], padding=True, return_tensors="pt")
    assert batch.input_ids.shape[0] == 2 and batch.attention_mask[0].sum() < batch.attention_mask[1].sum()


def test_dtype_from_config(tiny_model_dir):
    model = load_model(ModelConfig(base=str(tiny_model_dir), dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_missing_model_folder_raises_model_error(tmp_path):
    cfg = ModelConfig(base=str(tmp_path / "nope"))
    with pytest.raises(ModelError):
        load_tokenizer(cfg)
    with pytest.raises(ModelError):
        load_model(cfg)


# --------------------------------------------------------------------------- pickle safety
def test_pickled_checkpoint_is_refused_by_default(tiny_model_dir, tmp_path):
    folder = pickled_only_dir(tiny_model_dir, tmp_path / "pickled")
    with pytest.raises(ModelError, match="allow_pickle"):
        load_model(ModelConfig(base=str(folder)))


def test_pickled_checkpoint_loads_when_allowed(tiny_model_dir, tmp_path, probe_ids, reference_logits):
    folder = pickled_only_dir(tiny_model_dir, tmp_path / "pickled")
    model = load_model(ModelConfig(base=str(folder), allow_pickle=True))
    assert max_diff(logits_of(model, probe_ids), reference_logits) == 0.0


# --------------------------------------------------------------------------- LoRA / full set-up
def test_build_peft_config_maps_fields():
    from peft import TaskType

    lora = build_peft_config(AdapterConfig(r=8, alpha=16, dropout=0.1, target_modules="all-linear"))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (8, 16, 0.1)
    assert lora.target_modules == "all-linear"
    assert lora.task_type == TaskType.CAUSAL_LM

    lora = build_peft_config(AdapterConfig(r=4, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (4, 4, 0.0)
    assert set(lora.target_modules) == {"q_proj", "v_proj"}

    default = build_peft_config(AdapterConfig())
    assert (default.r, default.lora_alpha, default.lora_dropout, default.target_modules) == (16, 32, 0.05, "all-linear")


def _lora_layers(model) -> set[str]:
    """Short names (q_proj, ...) of the modules that got a LoRA adapter."""
    return {name.split(".lora_A.")[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters()
            if ".lora_A." in name}


def test_prepare_lora_explicit_targets_only_trains_lora(cfg):
    base = load_model(cfg)
    _, total_before = trainable_parameters(base)
    model = prepare_for_training(base, "lora", AdapterConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable, total = trainable_parameters(model)

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert _lora_layers(model) == {"q_proj", "v_proj"}
    # 2 layers x r=4 x [(64 in + 64 out) for q_proj + (64 in + 2 kv heads*16 out) for v_proj]
    assert trainable == 2 * 4 * ((64 + 64) + (64 + 32))
    assert 0 < trainable < total
    assert total == total_before + trainable  # the base weights are all still there, frozen


def test_prepare_lora_all_linear_wraps_every_projection_but_not_lm_head(cfg):
    model = prepare_for_training(load_model(cfg), "lora", AdapterConfig(r=2, target_modules="all-linear"))
    assert _lora_layers(model) == set(ATTN_LINEAR + MLP_LINEAR)
    assert not any("lm_head" in n and p.requires_grad for n, p in model.named_parameters())
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_prepare_full_trains_everything(cfg):
    base = load_model(cfg)
    for p in base.parameters():  # start from a frozen model: "full" must unfreeze it all
        p.requires_grad_(False)
    model = prepare_for_training(base, "full", AdapterConfig())
    assert model is base
    trainable, total = trainable_parameters(model)
    assert trainable == total == sum(p.numel() for p in base.parameters())
    assert not any("lora_" in n for n, _ in model.named_parameters())


# --------------------------------------------------------------------------- adapters round trip
def test_adapter_save_load_merge_round_trip(cfg, tokenizer, probe_ids, reference_logits, tmp_path):
    from transformers import AutoModelForCausalLM

    model = prepare_for_training(load_model(cfg), "lora",
                                 AdapterConfig(r=4, alpha=8, dropout=0.0, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a freshly initialised LoRA is a no-op (B = 0); make it count
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    adapted = logits_of(model, probe_ids)
    assert max_diff(adapted, reference_logits) > 1e-2, "the perturbed adapter must change the logits"

    adapter_dir = tmp_path / "adapter"
    save_trained(model, tokenizer, adapter_dir)
    assert is_adapter_dir(adapter_dir)
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert (adapter_dir / "tokenizer.json").is_file()
    assert not list(adapter_dir.glob("*.bin"))

    reloaded = load_trained(adapter_dir, base=cfg).model
    assert max_diff(logits_of(reloaded, probe_ids), adapted) <= 1e-5

    merged_dir = merge_and_save(model, tokenizer, tmp_path / "merged")
    assert merged_dir == tmp_path / "merged"
    assert not is_adapter_dir(merged_dir)
    assert not (merged_dir / ADAPTER_CONFIG).exists()
    assert (merged_dir / "model.safetensors").is_file()
    assert (merged_dir / "tokenizer.json").is_file()
    assert not list(merged_dir.glob("*.bin"))

    plain = AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True, dtype=torch.float32)
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert max_diff(logits_of(plain, probe_ids), adapted) <= 1e-4
    # load_trained on a full (non-adapter) folder returns the plain model
    assert max_diff(logits_of(load_trained(merged_dir, base=cfg).model, probe_ids), adapted) <= 1e-4


def test_is_adapter_dir(tiny_model_dir, tmp_path):
    assert not is_adapter_dir(tiny_model_dir)
    assert not is_adapter_dir(tmp_path / "missing")
    (tmp_path / ADAPTER_CONFIG).write_text("{}")
    assert is_adapter_dir(tmp_path)


def test_save_full_model_round_trip(cfg, tokenizer, probe_ids, reference_logits, tmp_path):
    model = prepare_for_training(load_model(cfg), "full", AdapterConfig())
    save_trained(model, tokenizer, tmp_path / "full")
    assert not is_adapter_dir(tmp_path / "full")
    assert max_diff(logits_of(load_trained(tmp_path / "full", base=cfg).model, probe_ids), reference_logits) == 0.0


# --------------------------------------------------------------------------- devices
def test_resolve_device_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device() == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ModelError, match="cuda"):
        resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the real CPU-only machine")
def test_resolve_device_auto_here_is_cpu():
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ModelError):
        resolve_device("cuda")


# --------------------------------------------------------------------------- GGUF import
@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama-f32.gguf", tiny_model_dir)


@pytest.fixture(scope="module")
def imported(tiny_gguf, tmp_path_factory) -> tuple[dict, Path]:
    out_dir = tmp_path_factory.mktemp("imported") / "model"
    return import_gguf(tiny_gguf, out_dir), out_dir


def test_gguf_fixture_is_a_llama_gguf(tiny_gguf, tiny_model_dir):
    from gguf import GGUFReader

    reader = GGUFReader(tiny_gguf)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output_norm.weight"} <= names
    assert "output.weight" not in names  # tied embeddings, as llama.cpp writes them
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
            "tokenizer.chat_template"} <= set(reader.fields)


def test_import_gguf_report_and_files(imported, tiny_gguf, reference_logits):
    report, out_dir = imported
    assert report["max_abs_logit_diff"] <= 1e-4
    assert report["source"] == str(tiny_gguf)
    assert report["out_dir"] == str(out_dir)
    assert report["parameters"] == _llama_params()

    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                 "domaintune_import.json"):
        assert (out_dir / name).is_file(), name
    assert json.loads((out_dir / "domaintune_import.json").read_text()) == report
    assert not out_dir.with_name(out_dir.name + ".partial").exists()
    assert not list(out_dir.parent.glob("*.partial"))
    assert not list(out_dir.glob("*.bin"))
    config = json.loads((out_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 2 and config["hidden_size"] == 64


def _llama_params() -> int:
    """Parameters of the tiny fixture Llama (tied embeddings, vocab 500, hidden 64, 2 layers)."""
    hidden, inter, vocab, kv = 64, 128, 500, 2 * 16
    layer = hidden * hidden * 2 + hidden * kv * 2 + 3 * hidden * inter + 2 * hidden
    return vocab * hidden + 2 * layer + hidden


def test_imported_folder_loads_with_safetensors_and_matches_original(imported, probe_ids, reference_logits,
                                                                     tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out_dir = imported
    model = AutoModelForCausalLM.from_pretrained(out_dir, use_safetensors=True, dtype=torch.float32)
    # the GGUF was written from the tiny HF model with llama.cpp's q/k permutation: exact round trip
    assert max_diff(logits_of(model, probe_ids), reference_logits) <= 1e-5

    tok = AutoTokenizer.from_pretrained(out_dir)
    assert tok(PROBE).input_ids == tokenizer(PROBE).input_ids
    assert tok.eos_token == tokenizer.eos_token
    messages = [{"role": "user", "content": "hi"}]
    assert (tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    # and through domaintune's own loader (safetensors only)
    model = load_model(ModelConfig(base=str(out_dir)))
    assert max_diff(logits_of(model, probe_ids), reference_logits) <= 1e-5


def test_load_model_straight_from_gguf_file(tiny_gguf, probe_ids, reference_logits):
    cfg = ModelConfig(base=str(tiny_gguf))
    assert model_inputs(cfg) == [str(tiny_gguf)]
    model = load_model(cfg)
    assert model.hf_quantizer is None and not getattr(model, "is_quantized", False)
    assert max_diff(logits_of(model, probe_ids), reference_logits) <= 1e-5
    assert load_tokenizer(cfg).pad_token is not None


def test_import_gguf_replaces_existing_out_dir(tiny_gguf, tmp_path):
    out_dir = tmp_path / "model"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("old import")
    report = import_gguf(tiny_gguf, out_dir, verify=False)
    assert "max_abs_logit_diff" not in report
    assert not (out_dir / "stale.txt").exists()
    assert (out_dir / "model.safetensors").is_file()
    assert not (tmp_path / "model.partial").exists()


def test_import_gguf_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _random_bytes(_good: bytes) -> bytes:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("corrupt", [
    _random_bytes,
    lambda good: b"",
    lambda good: good[:100],      # truncated inside the metadata: struct.error from the reader
    lambda good: good[:-10],      # truncated inside the tensor data
], ids=["random-bytes", "empty", "truncated-header", "truncated-data"])
def test_import_gguf_corrupt_file_raises_model_error(tiny_gguf, tmp_path, corrupt):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(corrupt(tiny_gguf.read_bytes()))
    with pytest.raises(ModelError, match="cannot read GGUF"):
        import_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.partial").exists()


# --------------------------------------------------------------------------- CLI
def test_cli_import_gguf(tiny_gguf, tmp_path):
    from typer.testing import CliRunner

    from domaintune.cli import app

    out_dir = tmp_path / "cli-model"
    result = CliRunner().invoke(app, ["models", "import-gguf", str(tiny_gguf), str(out_dir)])
    assert result.exit_code == 0, result.output
    assert "logits match" in " ".join(result.output.split())  # rich may wrap long lines
    assert (out_dir / "model.safetensors").is_file()


def test_cli_import_gguf_bad_file_is_a_clean_error(tmp_path):
    from typer.testing import CliRunner

    from domaintune.cli import app

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    result = CliRunner().invoke(app, ["models", "import-gguf", str(bad), str(tmp_path / "out")])
    assert result.exit_code == ModelError.exit_code, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
