"""Write a merged HF model folder as GGUF with the `gguf` package alone (no llama.cpp converter).

What llama.cpp's `convert_hf_to_gguf.py` does for the Llama, Qwen2 and Gemma-3 (text) families, in
little code: hyperparameters as `<arch>.*` keys, the vocabulary (GPT-2-style BPE with merges; for
Gemma-3 SentencePiece-style tokens with scores, gguf_gemma3.py), special ids and chat template,
tensors under GGUF names with llama's q/k rows permuted (Gemma-3: norms stored as 1 + w), 1-D
tensors in F32 and 2-D ones in the requested type (numpy reference quantizers of `gguf.quants`, byte-equal to
llama.cpp's; Q8_0 with an activation-weighted per-block scale search given calibration statistics,
q8_scales.py). When the base model was imported from a GGUF file and the export still matches it
(same hyperparameters, same vocabulary), every key is copied from that file, in its order, so an
untouched model re-exported in the source's type is byte-identical to the source.

K-quants (q4_k_m, ...) are not implemented by `gguf.quants`: they run llama.cpp's quantizer from
an F16 file when `llama-cpp-python` is importable, and are refused otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domaintune.config.export import GGUF_KQUANTS
from domaintune.errors import ModelError
from domaintune.export import gguf_gemma3
from domaintune.export.q8_scales import quantize_q8_0

# HF architecture → (gguf arch name, q/k permuted like llama.cpp's LlamaModel)
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "MistralForCausalLM": ("llama", True),
                 "Qwen2ForCausalLM": ("qwen2", False), "Gemma3ForCausalLM": ("gemma3", False)}
FOUR_BIT = ("q4_0", "q4_1", "q5_0", "q5_1")
OLDER_GEMMA = ("GemmaForCausalLM", "Gemma2ForCausalLM")
HEADER_KEYS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


def _permute(w, n_head: int, n_head_kv: int | None):
    """llama.cpp's LlamaModel.permute: interleaved → half-split rotary rows (transformers undoes it on load)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qtype(fmt: str):
    import gguf

    return gguf.GGMLQuantizationType[fmt.upper()]


def _file_type(fmt: str) -> int:
    import gguf

    return int(gguf.LlamaFileType[f"MOSTLY_{fmt.upper()}"])


# --------------------------------------------------------------------------- key/value plan
class _KV:
    """Ordered (key → (value, type, sub_type)) — what GGUFWriter.add_key_value takes."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[Any, Any, Any]] = {}

    def add(self, key: str, value: Any, vtype, sub_type=None) -> None:
        self.items[key] = (value, vtype, sub_type)


def _hyperparameters(cfg: dict, arch: str, fmt: str, kv: _KV) -> None:
    import gguf

    T = gguf.GGUFValueType
    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    if arch == gguf_gemma3.ARCH:  # rope parameters per layer type (global / sliding)
        theta = gguf_gemma3.global_rope_theta(cfg)
    else:
        rope = cfg.get("rope_parameters") or {}
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") not in ("default", None):
            raise ModelError(f"GGUF export: rope scaling '{rope.get('rope_type')}' is not supported by this "
                             "writer; export a model without rope scaling or use llama.cpp's converter")
    kv.add("general.architecture", arch, T.STRING)
    kv.add(f"{arch}.block_count", cfg["num_hidden_layers"], T.UINT32)
    kv.add(f"{arch}.context_length", cfg["max_position_embeddings"], T.UINT32)
    kv.add(f"{arch}.embedding_length", cfg["hidden_size"], T.UINT32)
    kv.add(f"{arch}.feed_forward_length", cfg["intermediate_size"], T.UINT32)
    kv.add(f"{arch}.attention.head_count", n_head, T.UINT32)
    kv.add(f"{arch}.attention.head_count_kv", cfg.get("num_key_value_heads") or n_head, T.UINT32)
    kv.add(f"{arch}.rope.freq_base", float(theta), T.FLOAT32)
    kv.add(f"{arch}.attention.layer_norm_rms_epsilon", float(cfg["rms_norm_eps"]), T.FLOAT32)
    kv.add("general.file_type", _file_type(fmt), T.UINT32)
    kv.add(f"{arch}.vocab_size", cfg["vocab_size"], T.UINT32)
    kv.add(f"{arch}.rope.dimension_count", head_dim, T.UINT32)
    if arch == gguf_gemma3.ARCH:
        gguf_gemma3.hyperparameters(cfg, kv, T)


def _vocabulary(model_dir: Path, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens by id and their GGUF types (special added → CONTROL, other added → USER_DEFINED,
    holes → [PADn] UNUSED), as llama.cpp's converter lists them."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tok, "is_fast", False) or "model" not in json.loads(tok.backend_tokenizer.to_str()):
        raise ModelError(f"GGUF export needs a fast (tokenizer.json) tokenizer in {model_dir}")
    if json.loads(tok.backend_tokenizer.to_str())["model"]["type"] != "BPE":
        raise ModelError("GGUF export: only byte-level BPE tokenizers (GPT-2 style: Llama-3, SmolLM, Qwen2) are "
                         "written by this exporter; SentencePiece vocabularies need llama.cpp's converter")
    rev = {i: t for t, i in tok.get_vocab().items()}
    added, decoder = tok.get_added_vocab(), tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif rev[i] in added:
            tokens.append(rev[i])
            types.append(int(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(rev[i])
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types


def _pre_tokenizer_name(model_dir: Path, arch: str) -> str:
    """llama.cpp picks its pre-tokenizer regex by this name. Without a source GGUF we read the split
    rule off tokenizer.json: plain byte-level (GPT-2's regex) → "gpt-2", individual digits + byte-level
    (SmolLM) → "smollm", Qwen2 → "qwen2"; else llama.cpp's "default" (its own regex, which splits digits
    and punctuation differently: checked against llama.cpp's tokenizer, test_export_llama_cpp_runtime)."""
    if arch == "qwen2":
        return "qwen2"
    pre = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [(p.get("type"), p.get("individual_digits"), p.get("use_regex", True)) for p in steps]
    if kinds == [("ByteLevel", None, True)]:
        return "gpt-2"
    if kinds == [("Digits", True, True), ("ByteLevel", None, True)]:
        return "smollm"
    return "default"


def _tokenizer_keys(model_dir: Path, arch: str, tokens: list[str], types: list[int], kv: _KV,
                    scores: list[float] | None = None) -> None:
    import gguf

    T = gguf.GGUFValueType
    sentencepiece = scores is not None  # Gemma-3: llama.cpp's "llama" (SentencePiece) tokenizer
    kv.add("tokenizer.ggml.model", "llama" if sentencepiece else "gpt2", T.STRING)
    if not sentencepiece:
        kv.add("tokenizer.ggml.pre", _pre_tokenizer_name(model_dir, arch), T.STRING)
    kv.add("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING)
    if sentencepiece:
        kv.add("tokenizer.ggml.scores", scores, T.ARRAY, T.FLOAT32)
    kv.add("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32)
    if sentencepiece:
        kv.add("tokenizer.ggml.add_space_prefix", False, T.BOOL)  # Gemma: no dummy prefix

    class _Collect:  # SpecialVocab writes through add_* methods; collect them into the plan
        def __getattr__(self, name):
            def add(value):
                key = {"add_token_merges": "tokenizer.ggml.merges", "add_chat_template": "tokenizer.chat_template",
                       "add_add_bos_token": "tokenizer.ggml.add_bos_token",
                       "add_add_eos_token": "tokenizer.ggml.add_eos_token"}.get(name)
                if key is None:  # add_bos_token_id, add_eos_token_id, add_pad_token_id, ...
                    which = name.removeprefix("add_").removesuffix("_token_id")
                    key = f"tokenizer.ggml.{ {'unk': 'unknown', 'pad': 'padding'}.get(which, which)}_token_id"
                    kv.add(key, int(value), T.UINT32)
                elif key == "tokenizer.ggml.merges":
                    kv.add(key, [m if isinstance(m, str) else " ".join(m) for m in value], T.ARRAY, T.STRING)
                elif key == "tokenizer.chat_template":
                    kv.add(key, value, T.STRING)
                else:
                    kv.add(key, bool(value), T.BOOL)
            return add

    gguf.SpecialVocab(model_dir, load_merges=not sentencepiece, n_vocab=len(tokens)).add_to_gguf(_Collect(),
                                                                                                  quiet=True)
    if not sentencepiece and "tokenizer.ggml.merges" not in kv.items:
        raise ModelError(f"GGUF export: no BPE merges found in {model_dir}/tokenizer.json")


def _read_source(source: Path) -> tuple[dict[str, tuple[Any, Any, Any]], list[str]]:
    """(every key of the source GGUF, in order, as (value, type, sub_type); its tensor names in order)."""
    import gguf

    reader = gguf.GGUFReader(source)
    out = {}
    for key, field in reader.fields.items():
        if key in HEADER_KEYS:
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        out[key] = (field.contents(), field.types[0], sub)
    return out, [t.name for t in reader.tensors]


def _same(a: tuple, b: tuple) -> bool:
    """Equal as stored: floats compare at float32 (what the file holds)."""
    import gguf
    import numpy as np

    if a[1] != b[1]:
        return False
    if a[1] == gguf.GGUFValueType.FLOAT32:
        return bool(np.float32(a[0]) == np.float32(b[0]))
    return a[0] == b[0]


def _plan_keys(model_dir: Path, cfg: dict, arch: str, fmt: str, source: Path | None) -> tuple[_KV, list[str], str]:
    """The keys to write, the source's tensor order (empty without a usable source), and where the
    metadata came from ("source" or "built")."""
    import gguf

    ours = _KV()
    _hyperparameters(cfg, arch, fmt, ours)
    scores, adds = None, {}
    if arch == gguf_gemma3.ARCH:
        tokens, scores, types, adds = gguf_gemma3.vocabulary(model_dir, cfg["vocab_size"])
    else:
        tokens, types = _vocabulary(model_dir, cfg["vocab_size"])
    if source is not None and source.is_file():
        src, order = _read_source(source)
        same = all(k in src and _same(src[k], v) for k, v in ours.items.items() if k != "general.file_type")
        if same and src.get("tokenizer.ggml.tokens", (None,))[0] == tokens:
            plan = _KV()
            for key, value in src.items():  # the source's keys and order: only the file type is rewritten
                plan.add(key, *(ours.items[key] if key == "general.file_type" else value))
            return plan, order, "source"
    ours.add("general.name", Path(model_dir).name, gguf.GGUFValueType.STRING)
    _tokenizer_keys(model_dir, arch, tokens, types, ours, scores)
    for flag, value in adds.items():  # what the tokenizer does, not what its config may leave unsaid
        ours.add(f"tokenizer.ggml.{flag}", value, gguf.GGUFValueType.BOOL)
    ours.add("general.quantization_version", gguf.GGML_QUANT_VERSION, gguf.GGUFValueType.UINT32)
    return ours, [], "built"


# --------------------------------------------------------------------------- tensors
def _tensor_type(gguf_name: str, array, fmt: str):
    """1-D → F32; the embedding/output of a 4-bit file → Q8_0 (llama.cpp's recipe, and measured
    better: +24 % vs +34 % PPL for Q4_0 on SmolLM2); rows not a multiple of the block → F16."""
    import gguf

    if array.ndim == 1:
        return gguf.GGMLQuantizationType.F32
    qtype = _qtype(fmt)
    if fmt in FOUR_BIT and gguf_name in ("token_embd.weight", "output.weight"):
        qtype = gguf.GGMLQuantizationType.Q8_0
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if array.shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return qtype


def _tensors(model_dir: Path, cfg: dict, arch: str, permute: bool):
    """(gguf name, HF name, float32 array) for every weight to write."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file  # torch: bf16/f16 weights (numpy has no bfloat16)

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelError(f"GGUF export: no *.safetensors in {model_dir}")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg["num_hidden_layers"])
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    for file in files:
        for hf_name, array in load_file(str(file)).items():
            if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                continue  # tied: no output.weight, which tells llama.cpp (and transformers) to tie
            stem, suffix = hf_name.rsplit(".", 1)
            gguf_name = names.get_name(stem)
            if gguf_name is None:
                raise ModelError(f"GGUF export: no GGUF name for tensor {hf_name} ({arch}); this layout is not "
                                 f"supported by the writer")
            a = array.float().numpy()
            if arch == gguf_gemma3.ARCH:
                a = a + gguf_gemma3.norm_shift(hf_name)
            if permute and hf_name.endswith("q_proj.weight"):
                a = _permute(a, n_head, n_head)
            elif permute and hf_name.endswith("k_proj.weight"):
                a = _permute(a, n_head, n_kv)
            yield f"{gguf_name}.{suffix}", hf_name, np.ascontiguousarray(a)


def write_gguf(model_dir: str | Path, out: str | Path, fmt: str, source: str | Path | None = None,
               importance: dict | None = None) -> dict:
    """Write `out` (.gguf) in `fmt` from the merged model folder `model_dir`. `source`: the GGUF the
    base model was imported from (metadata copied from it when the model still matches it).
    `importance`: per HF weight name, the mean squared input activation per column
    (q8_scales.input_importance): those Q8_0 tensors get searched scales; the others (and all without
    it) the reference max/127 scales.
    Returns what was written: metadata origin and tensor types."""
    if fmt in GGUF_KQUANTS:
        return _write_kquant(Path(model_dir), Path(out), fmt, source)
    import gguf

    model_dir, out = Path(model_dir), Path(out)
    cfg = json.loads((model_dir / "config.json").read_text())
    architecture = (cfg.get("architectures") or ["?"])[0]
    if architecture in OLDER_GEMMA:
        raise ModelError(f"GGUF export: {architecture} (Gemma 1/2) is not written by this exporter, only Gemma-3 "
                         "text models (Gemma3ForCausalLM); " + gguf_gemma3.FIX)
    if architecture == "Gemma3ForConditionalGeneration":
        gguf_gemma3.refuse_multimodal()
    if architecture == "Gemma3ForCausalLM":
        gguf_gemma3.check_supported(cfg)
    if architecture not in ARCHITECTURES:
        raise ModelError(f"GGUF export: architecture {architecture} is not supported (supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}); drop export.gguf or use llama.cpp's converter")
    arch, permute = ARCHITECTURES[architecture]
    plan, order, metadata_from = _plan_keys(model_dir, cfg, arch, fmt, Path(source) if source else None)
    tensors, hf_names = {}, {}
    for name, hf_name, array in _tensors(model_dir, cfg, arch, permute):
        tensors[name], hf_names[name] = array, hf_name
    names = [n for n in order if n in tensors] + [n for n in tensors if n not in set(order)]
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch=arch)
    writer.kv_data[0].clear()  # GGUFWriter pre-adds general.architecture; the plan decides the order
    for key, (value, vtype, sub) in plan.items.items():
        writer.add_key_value(key, value, vtype, sub_type=sub)
    counts: dict[str, int] = {}
    for name in names:
        array = tensors[name]
        qtype = _tensor_type(name, array, fmt)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and hf_names[name] in (importance or {}):
            # per-block scales searched against the layer's input activations (q8_scales.py)
            writer.add_tensor(name, quantize_q8_0(array, importance[hf_names[name]]), raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return {"format": fmt, "file": out.name, "metadata_from": metadata_from, "tensor_types": counts,
            "q8_0_scales": "activation-weighted search" if importance else "reference max/127",
            "bytes": out.stat().st_size}


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _tensor_type_counts(path: Path) -> dict[str, int]:
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return counts


def _write_kquant(model_dir: Path, out: Path, fmt: str, source) -> dict:
    """K-quants: llama.cpp's quantizer (llama-cpp-python) from an F16 file we write first. llama.cpp
    picks the type per tensor (Q4_K_M: Q6_K for some attn_v/ffn_down rows...) and falls back to a
    legacy type where a row is not a multiple of 256 (SmolLM2's 576-wide attention)."""
    if not llama_cpp_available():
        raise ModelError(f"export.gguf: {fmt} is a K-quant, which only llama.cpp's quantizer writes (the `gguf` "
                         f"package cannot); pip install 'domaintune[kquant]' (llama-cpp-python, which compiles "
                         f"llama.cpp: minutes), or use q4_0 / q4_1 / q5_0 / q5_1 / q8_0")
    import ctypes

    import llama_cpp
    import torch

    f16 = out.with_name(out.stem + ".f16-for-kquant.gguf")
    write_gguf(model_dir, f16, "f16", source)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{fmt.upper()}")
    if hasattr(params, "nthread"):  # the threads torch was pinned to, not every core
        params.nthread = torch.get_num_threads()
    partial = out.with_name(out.name + ".partial")
    try:
        code = llama_cpp.llama_model_quantize(str(f16).encode(), str(partial).encode(), ctypes.byref(params))
    finally:
        f16.unlink(missing_ok=True)
    if code != 0:
        partial.unlink(missing_ok=True)
        raise ModelError(f"llama.cpp's quantizer failed for {fmt} (return code {code})")
    partial.replace(out)
    return {"format": fmt, "file": out.name, "metadata_from": "llama.cpp", "tensor_types": _tensor_type_counts(out),
            "bytes": out.stat().st_size}
