"""`export:` — the final model for deployment: a merged folder, GGUF files (+ an Ollama Modelfile),
an INT8 CPU folder, each verified against the merged fp32 model within a tolerance per format."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from domaintune.config.base import Section

# Formats the `gguf` package quantizes itself (numpy reference quantizers, byte-equal to llama.cpp's).
GGUF_NATIVE = ("f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
# K-quants: only llama.cpp's quantizer writes them (optional: llama-cpp-python importable).
GGUF_KQUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
GgufType = Literal["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
                   "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"]


class ToleranceConfig(Section):
    """How far an export may drift from the merged fp32 model before the stage fails (exit code 3)."""

    max_ppl_rise_pct: float = Field(ge=0, description="Perplexity rise on the held-out text, in percent.")
    max_kl: float = Field(ge=0, description="Mean per-token KL(fp32 ‖ export) on the probe and held-out text.")
    min_top1: float = Field(ge=0, le=1, description="Share of positions where the two models' top-1 token agrees.")


# Measured on SmolLM2-135M (shared/notes/synth_export.md §3): F16 +0.001 %, Q8_0 +0.06 %, INT8 +0.25 %,
# Q4_x +24-34 %; the defaults leave headroom over those and catch a broken writer (KL ≫ 1, top-1 ≪ 0.5).
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "f16": {"max_ppl_rise_pct": 0.05, "max_kl": 1e-3, "min_top1": 0.99},
    "bf16": {"max_ppl_rise_pct": 0.5, "max_kl": 5e-3, "min_top1": 0.97},
    "q8_0": {"max_ppl_rise_pct": 0.5, "max_kl": 1e-2, "min_top1": 0.95},
    "q5_0": {"max_ppl_rise_pct": 10.0, "max_kl": 0.1, "min_top1": 0.85},
    "q5_1": {"max_ppl_rise_pct": 10.0, "max_kl": 0.1, "min_top1": 0.85},
    "q4_0": {"max_ppl_rise_pct": 50.0, "max_kl": 0.6, "min_top1": 0.6},
    "q4_1": {"max_ppl_rise_pct": 50.0, "max_kl": 0.6, "min_top1": 0.6},
    "k_quant": {"max_ppl_rise_pct": 30.0, "max_kl": 0.4, "min_top1": 0.7},
    "int8": {"max_ppl_rise_pct": 1.0, "max_kl": 1e-2, "min_top1": 0.95},
}


class ExportConfig(Section):
    merge: bool = Field(True, description="Merge adapters into the base weights (a standalone model).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype of the saved weights.")
    sample_prompts: list[str] = Field(default_factory=list, description="Answered after export.")
    max_new_tokens: int = Field(64, ge=1, description="Length limit of each sample answer.")
    gguf: list[GgufType] = Field(
        default_factory=list,
        description="GGUF files to write from the merged model, e.g. [q8_0, f16]. f16/bf16/q8_0/q4_0/q4_1/q5_0/"
                    "q5_1 are written by the `gguf` package (Llama family, Qwen2, Gemma-3 text); K-quants "
                    "(q4_k_m, ...) need llama-cpp-python (optional extra domaintune[kquant]) and are quantized "
                    "from the f16 file. Needs export.merge: true.")
    modelfile: bool = Field(False, description="Write an Ollama Modelfile next to the first GGUF file "
                                               "(TEMPLATE from the chat template, SYSTEM, stops, num_ctx).")
    system: str | None = Field(None, description="The Modelfile's SYSTEM message (default: the one the chat "
                                                 "template injects when a conversation has none, if any).")
    quantize: Literal["int8"] | None = Field(
        None, description="int8: torchao weight-only INT8 folder for CPU serving (`domaintune serve --model "
                          "runs/<name>/export/int8`), lm_head and embeddings kept in full precision. (int4 has no "
                          "fast CPU kernel in torchao: use export.gguf: [q4_0] with llama.cpp/Ollama.)")
    quantize_lm_head: bool = Field(False, description="Also quantize lm_head (unties tied embeddings: a bigger "
                                                      "file and ~2x slower decoding, measured).")
    tolerance: dict[str, ToleranceConfig] = Field(
        default_factory=dict,
        description="Per format (f16, q8_0, q4_0, ..., k_quant for every K-quant, int8): max_ppl_rise_pct, "
                    "max_kl, min_top1. Unset formats use the defaults in config/export.py. An export outside "
                    "its tolerance fails the stage (exit code 3) after the report is written.")
    calibration_tokens: int = Field(
        1024, ge=0, description="Tokens of the data stage's train split (no data stage: other Python docs than "
                                "the verification's) whose layer-input activations weight the Q8_0 scale search "
                                "(llama.cpp's imatrix idea; halves the KL to fp32, measured). 0: llama.cpp's "
                                "reference max/127 scales. The file is standard Q8_0 either way.")
    verify_tokens: int = Field(2048, ge=64, description="Held-out tokens (eval.split of the data stage, "
                                                        "all streams) each export is scored on.")
    verify_new_tokens: int = Field(16, ge=1, description="Greedy tokens generated per probe prompt; the "
                                                         "export's token ids are compared with fp32's.")

    @field_validator("quantize", mode="before")
    @classmethod
    def _no_cpu_int4(cls, value):
        if isinstance(value, str) and value.lower() in {"int4", "int4_wo", "int4_weight_only"}:
            raise ValueError("int4: torchao's int4 weight-only kernel is CUDA-only and its CPU prototype ran ~4x "
                             "slower than fp32 here; for 4-bit CPU deployment write export.gguf: [q4_0] (or "
                             "q4_1) and run it with llama.cpp or Ollama; for torch CPU serving use quantize: int8")
        return value

    @field_validator("tolerance", mode="before")
    @classmethod
    def _known_formats(cls, value):
        if not isinstance(value, dict):
            return value
        unknown = sorted(set(value) - set(DEFAULT_TOLERANCES))
        if unknown:
            raise ValueError(f"unknown format(s) {unknown}; tolerances are set per {sorted(DEFAULT_TOLERANCES)}")
        # a partial entry ({q8_0: {max_ppl_rise_pct: 0.2}}) keeps the format's other defaults
        return {k: {**DEFAULT_TOLERANCES[k], **v} if isinstance(v, dict) else v for k, v in value.items()}

    @model_validator(mode="after")
    def _gguf_needs_merge(self) -> ExportConfig:
        if (self.gguf or self.quantize) and not self.merge:
            raise ValueError("export.gguf / export.quantize are written from the merged model; set export.merge: "
                             "true")
        if self.modelfile and not self.gguf:
            raise ValueError("export.modelfile: true needs a GGUF file to point at; add export.gguf: [q8_0]")
        if len(set(self.gguf)) != len(self.gguf):
            raise ValueError(f"export.gguf lists a format twice: {self.gguf}")
        return self

    def tolerance_for(self, fmt: str) -> ToleranceConfig:
        key = "k_quant" if fmt in GGUF_KQUANTS else fmt
        return self.tolerance.get(key) or ToleranceConfig(**DEFAULT_TOLERANCES[key])
