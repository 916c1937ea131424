"""Load base models and tokenizers; load what a stage trained (`load_trained`); attach, save and
merge adapters; import GGUF checkpoints.

Safety defaults: `trust_remote_code` is off and only safetensors weights load unless the
config says `allow_pickle: true` (a pickled *.bin checkpoint can run arbitrary code). A checkpoint
that lacks weights its architecture needs is refused (they would silently start random).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from domaintune import hub
from domaintune.config import AdapterConfig, ModelConfig
from domaintune.errors import ModelError
from domaintune.extras import require
from domaintune.model_meta import (  # noqa: F401 - ADAPTER_CONFIG, TrainedMeta, is_adapter_dir: part of this API
    ADAPTER_CONFIG,
    TrainedMeta,
    describe_folder,
    is_adapter_dir,
    meta_of,
)


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


def hub_revision(cfg: ModelConfig) -> hub.HubRevision | None:
    """The commit a hub-id base resolves to now (None for a local folder or file)."""
    base, _ = _source(cfg)
    return hub.resolve(base, cfg.revision) if hub.is_hub_id(base) else None


def revision_record(cfg: ModelConfig) -> dict | None:
    """For a manifest: the hub commit a hub-id base resolved to (sha null, with the reason, when it
    could not be resolved); None for a local base."""
    pinned = hub_revision(cfg)
    return pinned.to_dict() if pinned else None


def _common_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    base, gguf = _source(cfg)
    kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    pinned = hub_revision(cfg)
    revision = pinned.sha if pinned and pinned.sha else cfg.revision  # load the commit the manifest records
    if revision:
        kw["revision"] = revision
    if gguf:
        require("gguf", "gguf", f"a GGUF model ({gguf})")  # transformers reads GGUF through it
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


def _checked_from_pretrained(source: str, what: str, **kw):
    """AutoModelForCausalLM.from_pretrained, refusing a checkpoint that lacks weights its architecture
    needs: transformers would initialise them at random and only log it (e.g. a `model.base` whose
    config.json names another architecture than its weights, or a truncated export)."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(source, output_loading_info=True, **kw)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelError(f"{what} lacks {len(missing)} weight(s) that its architecture "
                         f"({type(model).__name__}) needs: {shown}. Loading it would leave them random. "
                         f"Check that the folder is a complete checkpoint and that its config.json matches "
                         f"its weights (re-download, re-export or re-import it)")
    return model


def load_model(cfg: ModelConfig, device: str = "cpu", quantize_4bit: bool = False, extend: bool = True,
               method_key: str = "train.method"):
    """Load the base causal LM described by `cfg` onto `device` (with `cfg.new_tokens` added
    unless `extend` is False). `method_key`: the config key that asked for 4-bit (named in errors)."""
    import torch

    base, gguf = _source(cfg)
    kw = _common_kwargs(cfg)
    kw["dtype"] = getattr(torch, cfg.dtype)
    kw["attn_implementation"] = cfg.attn_implementation
    if not gguf:
        kw["use_safetensors"] = None if cfg.allow_pickle else True
    if quantize_4bit:
        kw.update(_bnb_4bit_kwargs(kw["dtype"], method_key))
    try:
        model = _checked_from_pretrained(base, f"model.base='{cfg.base}'", **kw)
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


# --------------------------------------------------------------------------- trained models
class TrainedModel(NamedTuple):
    model: Any
    tokenizer: Any
    meta: TrainedMeta


def load_trained(path: str | Path, *, base: ModelConfig | None = None, device: str = "cpu") -> TrainedModel:
    """Load a model folder that a stage trained or exported, with the tokenizer saved with it.

    `path` is any of: a full model folder (config.json + safetensors: full fine-tune, merged LoRA,
    `domaintune export` merged, `domaintune models import-gguf`), or an adapter folder (peft
    adapter_config.json: LoRA / prefix) that is loaded onto its base model. The base is `base` if
    given, else the model section recorded in the folder's domaintune_export.json or in the stage
    manifest that lists the folder as its `model` output, else adapter_config.json's
    base_model_name_or_path.

    The tokenizer, and with it the chat template training used (e.g. `sft.template`), is the one
    saved in the folder; only when none was saved is the base's taken (`meta.tokenizer_from` and
    `meta.template_from` say which). Weights load from safetensors only; `trust_remote_code` is
    off unless the base's model section turns it on. A folder lacking weights its architecture
    needs raises ModelError. Returns (model on `device`, tokenizer with a pad token, TrainedMeta).
    """
    path = Path(path)
    folder = describe_folder(path, base)
    tokenizer, tokenizer_from, template_from = _trained_tokenizer(path, folder.base)
    model = _trained_weights(path, folder.kind, folder.base, tokenizer, device)
    return TrainedModel(model, tokenizer, meta_of(path, folder, tokenizer_from, template_from))


def _trained_tokenizer(path: Path, base_cfg: ModelConfig | None) -> tuple[Any, str, str]:
    """(tokenizer, where it came from, where its chat template came from)."""
    from transformers import AutoTokenizer

    trust = bool(base_cfg and base_cfg.trust_remote_code)
    if (path / "tokenizer_config.json").is_file():
        try:
            tok, tok_from = AutoTokenizer.from_pretrained(path, trust_remote_code=trust), "saved"
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the tokenizer saved in {path}: {exc}") from exc
    elif base_cfg is not None:
        tok, tok_from = load_tokenizer(base_cfg), "base"
    else:
        raise ModelError(f"{path} has no tokenizer saved with it and names no base model to take one from; "
                         f"save the tokenizer into the folder (tokenizer.save_pretrained)")
    if tok.pad_token is None:  # causal LMs often ship without one; padding is always masked anyway
        tok.pad_token = tok.eos_token
    template_from = tok_from if tok.chat_template else "none"
    if template_from == "none" and tok_from == "saved" and base_cfg is not None:
        base_template = load_tokenizer(base_cfg, extend=False).chat_template
        if base_template:
            tok.chat_template, template_from = base_template, "base"
    return tok, tok_from, template_from


def _trained_weights(path: Path, kind: str, base_cfg: ModelConfig | None, tokenizer, device: str):
    if kind == "adapter":
        from peft import PeftModel

        model = load_model(base_cfg, device=device)
        # Trained with new domain tokens (model.new_tokens), the adapter holds embedding rows the base
        # lacks: grow the base to the saved tokenizer first or the weights cannot fit. The new rows'
        # values come from the adapter file, so the base's init for them does not matter.
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        try:
            return PeftModel.from_pretrained(model, path).to(device)
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: weights that do not fit the base
            raise ModelError(f"cannot load the adapter in {path} onto {base_cfg.base}: {exc}") from exc
    from domaintune import quantized

    if quantized.is_quantized_dir(path):  # `export.quantize: int8`: int8 parts in safetensors, rebuilt exactly
        return quantized.load_int8(path, device=device)
    trust = bool(base_cfg and base_cfg.trust_remote_code)
    try:
        model = _checked_from_pretrained(str(path), f"the trained model in {path}", use_safetensors=True,
                                         trust_remote_code=trust)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the model in {path}: {exc} (weights load from safetensors only)") from exc
    return model.to(device)


def merge_and_save(model, tokenizer, out_dir: Path, dtype: str = "float32") -> Path:
    """Fold LoRA weights into the base (a standalone model needing no peft) and save it."""
    import torch

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model = model.to(getattr(torch, dtype))
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
    from transformers import AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    require("gguf", "gguf", "domaintune models import-gguf")  # transformers reads GGUF through it
    kw = {"gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = _checked_from_pretrained(str(gguf_path.parent), f"GGUF {gguf_path}", dtype=torch.float32, **kw)
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
    """What to fingerprint for a model: its local file/folder, or for a hub id the commit it resolved
    to (`hf://org/name@sha`; nothing when unresolved: the id and revision are in the config)."""
    base, gguf = _source(cfg)
    if Path(base).exists():
        return [str(Path(base) / gguf) if gguf else base]
    pinned = hub_revision(cfg)
    return [f"hf://{pinned.repo_id}@{pinned.sha}"] if pinned and pinned.sha else []
