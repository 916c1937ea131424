"""INT8 weight-only model folders (torchao): quantize, save as safetensors, load back exactly.

torchao's `Int8WeightOnlyConfig` turns each chosen `nn.Linear` weight into an `Int8Tensor`
(int8 rows + one fp32 scale per row). Its tensor subclass only round-trips through pickle
(`torch.save`), which domaintune never loads, so a folder stores the plain parts instead: every
full-precision tensor under its name, and for a quantized weight `<name>.qdata` (int8) and
`<name>.scale` (fp32) in `model-int8.safetensors`, with `domaintune_quantized.json` naming the
method and the modules. Loading rebuilds the same `Int8Tensor`s from those parts (bit-exact, no
re-quantization). `lm_head` (and with it tied input embeddings) stays fp32 by default: quantizing
the tied 49k-row head unties it, grows the file and halves decode speed (measured on SmolLM2).
"""

from __future__ import annotations

import json
from pathlib import Path

from domaintune.errors import ModelError
from domaintune.extras import require

MARKER = "domaintune_quantized.json"
WEIGHTS = "model-int8.safetensors"
METHOD = "torchao_int8_weight_only"


def is_quantized_dir(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def quantize_int8(model, keep_lm_head: bool = True) -> list[str]:
    """Quantize `model`'s Linear weights in place; returns the quantized module names."""
    import torch

    require("torchao", "int8", "export.quantize: int8")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    out = model.get_output_embeddings()

    def chosen(module, fqn: str) -> bool:
        if not isinstance(module, torch.nn.Linear):
            return False
        return not (keep_lm_head and module is out)

    names = [n for n, m in model.named_modules() if chosen(m, n)]
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=chosen)
    return names


def save_int8(model, tokenizer, names: list[str], out_dir: Path) -> None:
    """config.json + tokenizer + model-int8.safetensors + the marker (see the module docstring)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, block_sizes = {}, {}
    quantized = set(names)
    tied = _tied(model)
    for name, module in model.named_modules():
        for pname, param in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            full = f"{name}.{pname}" if name else pname
            if name in quantized and pname == "weight":
                tensors[f"{full}.qdata"] = param.qdata.contiguous()
                tensors[f"{full}.scale"] = param.scale.contiguous()
                block_sizes[full] = list(param.block_size)
            elif not (tied and module is model.get_output_embeddings()):
                tensors[full] = param.detach().contiguous()
    tensors = {k: v for k, v in tensors.items() if "rotary_emb" not in k}  # recomputed from the config
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "pt", "method": METHOD})
    model.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / MARKER).write_text(json.dumps({"method": METHOD, "modules": names, "block_sizes": block_sizes,
                                              "tied_embeddings": tied}, indent=2) + "\n")


def _tied(model) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and out.weight is inp.weight


def load_int8(path: str | Path, device: str = "cpu"):
    """The INT8 model saved by `save_int8`, with exactly the saved int8 weights (eval mode, CPU)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    require("torchao", "int8", f"the INT8 model in {path}")
    from torchao.quantization import Int8Tensor

    path = Path(path)
    meta = json.loads((path / MARKER).read_text())
    if meta.get("method") != METHOD:
        raise ModelError(f"{path / MARKER}: unknown quantization method {meta.get('method')!r} (expected {METHOD})")
    if device != "cpu":
        raise ModelError(f"{path}: INT8 weight-only folders run on CPU (device 'cpu'); serve the fp32 export on a GPU")
    state = load_file(str(path / WEIGHTS))
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain = {k: v for k, v in state.items() if not k.endswith((".qdata", ".scale"))}
    missing, unexpected = model.load_state_dict(plain, strict=False, assign=True)
    quantized = {f"{n}.weight" for n in meta["modules"]}
    missing = [k for k in missing if k not in quantized and not (meta.get("tied_embeddings") and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelError(f"{path / WEIGHTS} does not fit its config.json: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; re-export it")
    modules = dict(model.named_modules())
    for name in meta["modules"]:
        key = f"{name}.weight"
        weight = Int8Tensor(state[f"{key}.qdata"], state[f"{key}.scale"], meta["block_sizes"][key], torch.float32)
        modules[name].weight = torch.nn.Parameter(weight, requires_grad=False)
    if meta.get("tied_embeddings"):
        model.tie_weights()
    _materialize_buffers(model, config)
    return model.eval()


def _materialize_buffers(model, config) -> None:
    """Non-persistent buffers (rotary inv_freq) were created on meta: recompute them on CPU."""
    import torch

    for name, module in model.named_modules():
        if any(b.is_meta for b in module.buffers(recurse=False)):
            fresh = type(module)(config=config) if "rotary" in name or "Rotary" in type(module).__name__ else None
            if fresh is None:
                raise ModelError(f"cannot rebuild buffer(s) of {name} ({type(module).__name__}) for an INT8 load")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, fresh.to(torch.device("cpu")))
