"""Load the model to serve from a folder: a full (merged) model, or a base + LoRA adapter folder.

Safetensors only and no remote code: a served folder is untrusted input to the server process.
The lead switches this one function to `models.load_trained` when that loader lands.
"""

from __future__ import annotations

import json
from pathlib import Path

from domaintune.errors import ModelError

ADAPTER_CONFIG = "adapter_config.json"


def _check_folder(model_dir: Path) -> None:
    if (model_dir / ADAPTER_CONFIG).is_file():
        if not (model_dir / "adapter_model.safetensors").is_file():
            raise ModelError(f"{model_dir}: the adapter has no adapter_model.safetensors (pickled adapters are "
                             f"refused); re-save it with safe_serialization=True")
        return
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} is not a model folder (no config.json or {ADAPTER_CONFIG}); export one with "
                         f"`domaintune export CONFIG` or import one with `domaintune models import-gguf`")
    if not any(model_dir.glob("*.safetensors")):
        raise ModelError(f"{model_dir}: no *.safetensors weights (pickled *.bin weights are refused when serving)")


def _adapter_base(model_dir: Path, base: str | None) -> str:
    if base:
        return base
    saved = json.loads((model_dir / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not saved:
        raise ModelError(f"{model_dir / ADAPTER_CONFIG} names no base model; serve it with the run's config "
                         f"(`domaintune serve CFG`), which knows model.base")
    return saved


def load_for_serving(model_dir: str | Path, base: str | None = None):
    """(model, tokenizer) in eval mode on CPU. An adapter is merged into its base: one matmul per layer
    instead of two at every decode step, with the same outputs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    _check_folder(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    if not (model_dir / ADAPTER_CONFIG).is_file():
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False)
        return model.eval(), tokenizer
    from peft import PeftModel

    base_model = AutoModelForCausalLM.from_pretrained(_adapter_base(model_dir, base), use_safetensors=True,
                                                      trust_remote_code=False)
    if len(tokenizer) > base_model.get_input_embeddings().num_embeddings:
        # trained with new domain tokens: the adapter holds the extra rows, so grow the base to fit them
        base_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = PeftModel.from_pretrained(base_model, model_dir).merge_and_unload()
    return model.eval(), tokenizer
