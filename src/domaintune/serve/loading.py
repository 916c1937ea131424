"""Load the model to serve from a folder: a full (merged) model, a base + LoRA adapter folder, or
the torchao INT8 folder of `export.quantize: int8` (`serve.weights: int8` picks it for `serve CFG`).

Safetensors only and no remote code: a served folder is untrusted input to the server process.
"""

from __future__ import annotations

from pathlib import Path

from domaintune.config import ModelConfig
from domaintune.errors import ModelError

ADAPTER_CONFIG = "adapter_config.json"


def int8_export(cfg, run) -> Path:
    """The run's INT8 export folder, for `serve.weights: int8`; a clear error when the run has none."""
    from domaintune import quantized

    manifest = run.manifest("export")
    folder = run.root / "export" / manifest["outputs"]["int8"] if manifest and "int8" in manifest.get(
        "outputs", {}) else None
    if folder is None or not quantized.is_quantized_dir(folder):
        how = ("the export stage has not run" if manifest is None else "its export stage wrote no INT8 folder"
               if folder is None else f"{folder} is not an INT8 folder (no {quantized.MARKER})")
        raise ModelError(f"serve.weights: int8 serves runs/{cfg.name}/export/int8, but {how}: set export.quantize: "
                         f"int8 and run `domaintune run CONFIG --stages export`, or set serve.weights: full")
    return folder


def _check_folder(model_dir: Path) -> None:
    from domaintune import quantized

    if quantized.is_quantized_dir(model_dir):
        if not (model_dir / quantized.WEIGHTS).is_file():
            raise ModelError(f"{model_dir}: INT8 folder without {quantized.WEIGHTS}; re-run the export stage")
        return
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


def load_for_serving(model_dir: str | Path, base: ModelConfig | None = None):
    """(model, tokenizer) in eval mode on CPU, through the one trained-model loader
    (`models.load_trained`: the tokenizer and chat template saved with the model, safetensors only).
    An adapter is merged into its base: one matmul per layer instead of two at every decode step,
    with the same outputs."""
    from domaintune import models

    model_dir = Path(model_dir)
    _check_folder(model_dir)
    trained = models.load_trained(model_dir, base=base, device="cpu")
    model = trained.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval(), trained.tokenizer
