"""Load base models and tokenizers; attach, save and merge adapters; import GGUF checkpoints.

Safety defaults: `trust_remote_code` is off and only safetensors weights load unless the
config says `allow_pickle: true` (a pickled *.bin checkpoint can run arbitrary code).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from domaintune.config import AdapterConfig, ModelConfig
from domaintune.errors import ModelError

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
ADAPTER_CONFIG = "adapter_config.json"


@contextmanager
def evaluating(model) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then the mode the caller had: scoring during training
    must not leave the model in eval mode, nor scoring after training put it back into train mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("runtime.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return device


def _source(cfg: ModelConfig) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name) — `base` may point straight at a .gguf file."""
    base = Path(cfg.base)
    if cfg.base.endswith(".gguf") and base.is_file():
        return str(base.parent), base.name
    return cfg.base, cfg.gguf_file


def _common_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    base, gguf = _source(cfg)
    kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        kw["revision"] = cfg.revision
    if gguf:
        kw["gguf_file"] = gguf
    return kw


def load_tokenizer(cfg: ModelConfig, extend: bool = True):
    """The base tokenizer, plus `cfg.new_tokens` unless `extend` is False (e.g. to score the
    untouched base model)."""
    from transformers import AutoTokenizer

    base, _ = _source(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(base, **_common_kwargs(cfg))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of model.base='{cfg.base}': {exc}") from exc
    if tok.pad_token is None:  # causal LMs often ship without one; padding is always masked anyway
        tok.pad_token = tok.eos_token
    if extend and cfg.new_tokens:
        from domaintune.vocab import extend_tokenizer

        extend_tokenizer(tok, cfg.new_tokens)
    return tok


def _extend_vocabulary(model, cfg: ModelConfig) -> None:
    """Grow the embeddings for `cfg.new_tokens`, each new row the mean of its old sub-tokens."""
    from domaintune.vocab import extend_tokenizer, resize_with_mean_init

    base_tok = load_tokenizer(cfg, extend=False)
    extended = load_tokenizer(cfg, extend=False)
    added = extend_tokenizer(extended, cfg.new_tokens)
    resize_with_mean_init(model, extended, added, base_tok)


def _strip_gguf_quantizer(model) -> None:
    """A GGUF-loaded model is dequantized fp32 but still flagged "quantized"; unflag it so it can
    be trained and saved like any other model."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def load_model(cfg: ModelConfig, device: str = "cpu", quantize_4bit: bool = False, extend: bool = True,
               method_key: str = "train.method"):
    """Load the base causal LM described by `cfg` onto `device` (with `cfg.new_tokens` added
    unless `extend` is False). `method_key`: the config key that asked for 4-bit (named in errors)."""
    import torch
    from transformers import AutoModelForCausalLM

    base, gguf = _source(cfg)
    kw = _common_kwargs(cfg)
    kw["dtype"] = getattr(torch, DTYPES[cfg.dtype])
    kw["attn_implementation"] = cfg.attn_implementation
    if not gguf:
        kw["use_safetensors"] = None if cfg.allow_pickle else True
    if quantize_4bit:
        kw.update(_bnb_4bit_kwargs(kw["dtype"], method_key))
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kw)
    except (OSError, ValueError) as exc:
        hint = ("" if cfg.allow_pickle else
                " If the checkpoint only has pickled *.bin weights, convert it to safetensors or set "
                "model.allow_pickle: true (only for checkpoints you trust).")
        raise ModelError(f"cannot load model.base='{cfg.base}': {exc}.{hint}") from exc
    if gguf:
        _strip_gguf_quantizer(model)
    if extend and cfg.new_tokens:
        _extend_vocabulary(model, cfg)
    return model if quantize_4bit else model.to(device)


def _bnb_4bit_kwargs(compute_dtype, method_key: str) -> dict[str, Any]:
    """QLoRA: NF4 weights with double quantization (bitsandbytes, CUDA only)."""
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise ModelError(f"{method_key} 'qlora' needs a CUDA GPU (bitsandbytes 4-bit); use 'lora' on CPU")
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16 if compute_dtype == torch.float32
                             else compute_dtype)
    return {"quantization_config": bnb, "device_map": {"": 0}}


# --------------------------------------------------------------------------- adapters
def build_peft_config(adapter: AdapterConfig):
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=adapter.r, lora_alpha=adapter.alpha,
                      lora_dropout=adapter.dropout, target_modules=adapter.target_modules)


def prepare_for_training(model, method: str, adapter: AdapterConfig,
                         train_embeddings: bool = False, activation_checkpointing: bool = False):
    """Attach a LoRA adapter (lora/qlora) or make every weight trainable (full).

    `activation_checkpointing` (the section's setting) recomputes activations in the backward pass.
    `train_embeddings` (train.train_embeddings) also trains the input embeddings and lm_head in
    full next to the adapter, as peft `modules_to_save`: needed for new tokens (model.new_tokens),
    whose rows LoRA cannot reach. `full` trains them anyway.
    """
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return _checkpoint_activations(model) if activation_checkpointing else model
    from dataclasses import replace

    from peft import get_peft_model, prepare_model_for_kbit_training

    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=activation_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif activation_checkpointing:
        model = _checkpoint_activations(model)
    peft_config = build_peft_config(adapter)
    if train_embeddings:
        # Tied embeddings (one matrix for input and lm_head): with ensure_weight_tying, peft keeps
        # ONE trainable copy of the embedding and points lm_head at it, so the model stays tied
        # through training, save, reload and merge (checked with peft 0.21). Without it (or on a
        # peft too old to have the option) peft warns and trains two separate copies, silently
        # untying them. peft spots the pair by the names embed_tokens/lm_head; other names get the
        # same fallback: two copies, which still save and reload exactly (only a merge back into a
        # tie_word_embeddings=True model would then lose the lm_head copy).
        names, tied = _embedding_module_names(model)
        can_tie = tied and hasattr(peft_config, "ensure_weight_tying")
        extra = {"ensure_weight_tying": True} if can_tie else {}
        peft_config = replace(peft_config, modules_to_save=names, **extra)
    return get_peft_model(model, peft_config)


def _checkpoint_activations(model):
    """Non-reentrant checkpointing: gradients still reach an adapter whose inputs come from frozen
    embeddings (the reentrant variant would need enable_input_require_grads). transformers >= 5
    renamed the method and warns on the old name."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def prepare_prefix_tuning(model, num_virtual_tokens: int):
    """Prefix tuning (peft): trainable key/value prefixes in every layer, base weights frozen.
    A prefix cannot be merged into the weights, so such a model is exported as an adapter."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    return get_peft_model(model, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                    num_virtual_tokens=num_virtual_tokens))


def _embedding_module_names(model) -> tuple[list[str], bool]:
    """Full module names of the input and output embeddings (found by identity, so any
    architecture's naming works), and whether the two share one weight."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    wanted = [m for m in (inp, out) if m is not None]
    names = [next(name for name, mod in model.named_modules() if mod is m) for m in wanted]
    tied = out is not None and out.weight is inp.weight
    return list(dict.fromkeys(names)), tied


def trainable_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def save_trained(model, tokenizer, out_dir: Path) -> None:
    """Save an adapter (peft) or full weights as safetensors, plus the tokenizer (and its template)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_trained(base_cfg: ModelConfig, trained_dir: Path, device: str = "cpu"):
    """Load what a training stage saved: base + adapter, or a full model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trained_dir = Path(trained_dir)
    if is_adapter_dir(trained_dir):
        from peft import PeftModel

        base = load_model(base_cfg, device=device)
        # Trained with new domain tokens (model.new_tokens), the adapter holds embedding rows the
        # base lacks: grow the base to the saved tokenizer first or the weights cannot fit. The new
        # rows' values come from the adapter file, so the base's init for them does not matter.
        if (trained_dir / "tokenizer_config.json").is_file():
            vocab = len(AutoTokenizer.from_pretrained(trained_dir))
            if vocab > base.get_input_embeddings().num_embeddings:
                base.resize_token_embeddings(vocab, mean_resizing=False)
        return PeftModel.from_pretrained(base, trained_dir).to(device)
    return AutoModelForCausalLM.from_pretrained(trained_dir, use_safetensors=True).to(device)


def merge_and_save(model, tokenizer, out_dir: Path, dtype: str = "float32") -> Path:
    """Fold LoRA weights into the base (a standalone model needing no peft) and save it."""
    import torch

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model = model.to(getattr(torch, DTYPES[dtype]))
    save_trained(model, tokenizer, out_dir)
    return out_dir


# --------------------------------------------------------------------------- GGUF import
def import_gguf(gguf_path: str | Path, out_dir: str | Path, verify: bool = True,
                atol: float = 1e-4) -> dict[str, Any]:
    """Turn a GGUF checkpoint into a normal safetensors folder and check the logits match.

    transformers dequantizes GGUF to fp32 on load (slow: 30-60 s for a 135M model); a plain
    safetensors folder then loads in seconds with identical logits.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    kw = {"gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    except Exception as exc:  # a corrupt file fails in many ways: struct.error, OverflowError, bare Exception
        raise ModelError(f"cannot read GGUF {gguf_path}: {type(exc).__name__}: {exc}") from exc
    _strip_gguf_quantizer(model)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_trained(model, tokenizer, staging)
    report = {"source": str(gguf_path), "out_dir": str(out_dir),
              "parameters": sum(p.numel() for p in model.parameters())}
    if verify:
        report["max_abs_logit_diff"] = _verify_logits(model, tokenizer, staging, atol)
    (staging / "domaintune_import.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)  # only a verified folder appears under the final name
    return report


def _verify_logits(model, tokenizer, saved_dir: Path, atol: float) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    probe = "The bank's wire transfer fee is 15 USD. 海港银行的手续费。def f(x): return x"
    ids = tokenizer(probe, return_tensors="pt").input_ids
    reloaded = AutoModelForCausalLM.from_pretrained(saved_dir, use_safetensors=True, dtype=torch.float32)
    with torch.inference_mode():
        a = model.eval()(ids, use_cache=False).logits
        b = reloaded.eval()(ids, use_cache=False).logits
    diff = float((a - b).abs().max())
    if diff > atol:
        raise ModelError(f"imported model's logits differ from the GGUF model by {diff:.3g} (> {atol}); "
                         f"the conversion is not faithful — please report the model architecture")
    return diff


def model_inputs(cfg: ModelConfig) -> list[str]:
    """What to fingerprint for a model: its local file/folder (hub ids are named in the config)."""
    base, gguf = _source(cfg)
    if Path(base).exists():
        return [str(Path(base) / gguf) if gguf else base]
    return []
