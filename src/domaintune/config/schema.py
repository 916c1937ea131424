"""The root `Config`: one section per stage, and the one table of which section switches which
stage on."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from domaintune.config.align import AlignConfig
from domaintune.config.base import (
    RELATIVE_TO,
    ConfigWarning,
    Count,
    CountOrZero,
    FilePath,
    ModelRef,
    Section,
    result_settings,
)
from domaintune.config.data import DataConfig
from domaintune.config.distill import DistillConfig
from domaintune.config.eval import EvalConfig
from domaintune.config.export import ExportConfig
from domaintune.config.kb import KBConfig
from domaintune.config.migrate import migrate
from domaintune.config.runtime import RuntimeConfig
from domaintune.config.serve import ServeConfig
from domaintune.config.sft import SFTConfig
from domaintune.config.synth import SynthConfig
from domaintune.config.training import TrainConfig
from domaintune.registry import suggest


class ModelConfig(Section):
    base: ModelRef = Field(description="Hub id (org/name), a local model folder, or a .gguf file.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    gguf_file: str | None = Field(
        None, description="GGUF file name inside `base` (slow: prefer `domaintune models import-gguf`)."
    )
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint.")
    allow_pickle: bool = Field(
        False, description="Allow pickled *.bin weights. Off: only safetensors load (pickle runs code)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype the weights load in.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="flash_attention_2 needs a CUDA GPU and the flash-attn package."
    )
    new_tokens: list[str] = Field(
        default_factory=list, description="Domain tokens to add to the vocabulary; new rows start as the "
                                          "mean of the embeddings of the sub-tokens they replace.")


class MixConfig(Section):
    mixture: dict[str, float] = Field(
        description="Stream -> relative weight, in tokens (e.g. {english: 3, chinese: 6, domain: 1})."
    )
    tokens: Count = Field(description="Training token budget, e.g. 200k or 50M.")
    seq_len: int = Field(1024, ge=16, description="Row length when `buckets` is not set; the longest row "
                                                  "(documents are split to fit it) when `buckets: auto`.")
    buckets: list[int] | Literal["auto"] | None = Field(
        None, description="Row lengths, e.g. [2048, 4096, 8192, 32768]: each document goes to the smallest "
                          "that fits; longer ones are split at paragraph/sentence boundaries. `auto`: the row "
                          "length is chosen from the mixture's segment lengths (the shortest that packs with "
                          "< 2 % of rows empty, up to `seq_len`); the choice is reported in mix.json.")
    max_repeats: int = Field(
        4, ge=1, description="A stream that runs out is repeated at most this many epochs (then a warning)."
    )
    heldout_tokens: CountOrZero = Field(
        8192, description="Tokens per stream packed from the val split for held-out loss during training "
                          "(0: none).")

    @model_validator(mode="after")
    def _positive_weights(self) -> MixConfig:
        bad = [k for k, w in self.mixture.items() if w <= 0]
        if bad or not self.mixture:
            raise ValueError(f"mixture weights must be > 0 and non-empty (bad: {bad})")
        if isinstance(self.buckets, list) and (not self.buckets or min(self.buckets) < 16
                                               or sorted(set(self.buckets)) != self.buckets):
            raise ValueError(f"buckets must be 'auto' or increasing, unique and >= 16 (got {self.buckets})")
        return self

    @property
    def bucket_lengths(self) -> list[int]:
        """The configured row lengths; with `auto`, `seq_len` (the longest row auto may choose)."""
        return self.buckets if isinstance(self.buckets, list) else [self.seq_len]


_PACKAGE_DIR = Path(__file__).resolve().parents[1]

# Which config section switches each stage on (eval and export run when any model stage does).
# The model stages, in order: each starts from the previous one's model.
STAGE_SECTIONS = {"data": "data", "synth": "synth", "mix": "mix", "train": "mix", "sft": "sft", "align": "align",
                  "distill": "distill"}
MODEL_STAGES = ("train", "sft", "align", "distill")
NEEDS_A_MODEL_STAGE = ("eval", "export")


class Config(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Run name: outputs go to runs_dir/name.")
    runs_dir: FilePath = Field("runs", description="Folder holding every run's folder.")
    seed: int = Field(0, description="Seed of every random choice (split, sampling, initialisation, order).")
    model: ModelConfig = Field(description="The base model.")
    data: DataConfig | None = Field(None, description="Stage 1 (governed pre-training text); omit to skip.")
    mix: MixConfig | None = Field(
        None, description="Stage 2 (token mixture + packing); omit to skip continual pre-training (the train stage).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Continual pre-training (runs with mix).")
    synth: SynthConfig | None = Field(None, description="Instruction synthesis with a teacher (feeds sft); omit "
                                                        "to skip.")
    sft: SFTConfig | None = Field(None, description="Supervised fine-tuning on conversations; omit to skip.")
    align: AlignConfig | None = Field(
        None, description="Preference alignment (reward model, confidence filter, DPO); omit to skip.")
    distill: DistillConfig | None = Field(
        None, description="Distil the tuned model into a smaller student (eval and export then use the student); "
                          "omit to skip.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Base vs tuned: perplexity, tasks, gate.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="The final model, ready to serve.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Device, threads, supervision.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="`domaintune serve`: the run's model behind "
                                                                        "an OpenAI-compatible API.")
    kb: KBConfig | None = Field(None, description="Knowledge base (retrieval with per-document ACL); omit for none.")
    _source_dir: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, raw: Any) -> Any:
        return migrate(raw)[0] if isinstance(raw, dict) else raw

    @model_validator(mode="after")
    def _streams_exist(self) -> Config:
        if self.data is None:
            needs = [k for k, v in (("mix", self.mix), ("eval.streams", self.eval.streams)) if v]
            if needs:
                raise ValueError(f"{' and '.join(needs)} need a data section (the streams come from data.sources)")
            return self
        streams = {s.stream for s in self.data.sources}
        problems = [f"mix.mixture.{k}: no data source has stream '{k}'{suggest(k, streams)}"
                    for k in (self.mix.mixture if self.mix else {}) if k not in streams]
        problems += [f"eval.streams: unknown stream '{k}'{suggest(k, streams)}"
                     for k in (self.eval.streams or []) if k not in streams]
        gate = self.eval.gate  # the default ["domain"] may name no stream (warned below); a value the user wrote must
        if gate.enabled and "domain_streams" in gate.model_fields_set:
            problems += [f"eval.gate.domain_streams: unknown stream '{k}'{suggest(k, streams)}"
                         for k in gate.domain_streams if k not in streams]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _cross_section(self) -> Config:
        problems = []
        t = self.train
        if self.mix and t.batch.batch_tokens and t.batch.batch_tokens < max(self.mix.bucket_lengths):
            problems.append(f"train.batch.batch_tokens ({t.batch.batch_tokens}) is smaller than the largest bucket "
                            f"({max(self.mix.bucket_lengths)}): such rows would still be batched one at a time")
        if self.model.new_tokens and t.method != "full" and not t.train_embeddings:
            problems.append("model.new_tokens: an adapter cannot train the new embedding rows; set "
                            "train.train_embeddings: true (or train.method: full)")
        if self.distill is not None and (self.mix is None or len(self.model_stages()) < 2):
            problems.append("distill: needs a mix section (the student trains on the mixture's packed rows) and a "
                            "model stage before it (train, sft or align: the teacher)")
        if t.method == "full" and self.export.merge is False:
            problems.append("export.merge: false only makes sense with an adapter (train.method lora/qlora)")
        if self.sft is not None and not self.sft.data and self.synth is None:
            problems.append("sft.data: give at least one conversation file (or add a synth section to feed SFT)")
        if self.synth is not None and "doc_qa" in self.synth.methods and self.data is None:
            problems.append("synth.methods doc_qa reads the data stage's train split: add a data section")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _probably_unintended(self) -> Config:
        if self.mix is None and self.train.model_fields_set:
            warnings.warn("train: settings without a mix section do nothing (continual pre-training runs on the "
                          "mix stage's packed data); add mix (and data), or remove train", ConfigWarning, stacklevel=2)
        gate = self.eval.gate
        if (self.data is not None and self.final_model_stage is not None and gate.enabled
                and "domain_streams" not in gate.model_fields_set):
            streams = {s.stream for s in self.data.sources}
            if not streams & set(gate.domain_streams):
                warnings.warn(f"eval.gate.domain_streams: the default {gate.domain_streams} names no data stream "
                              f"(streams: {', '.join(sorted(streams))}), so every stream is gated as general and no "
                              f"domain improvement is checked; set eval.gate.domain_streams", ConfigWarning,
                              stacklevel=2)
        return self

    # ------------------------------------------------------------------ stages
    def stage_enabled(self, stage: str) -> bool:
        """Whether this config switches `stage` on (see STAGE_SECTIONS); other names are always on."""
        if stage in NEEDS_A_MODEL_STAGE:
            return self.final_model_stage is not None
        section = STAGE_SECTIONS.get(stage)
        return section is None or getattr(self, section, None) is not None

    def model_stages(self) -> list[str]:
        """The enabled stages that produce a model, in pipeline order: continual pre-training (on when
        `mix` is set), then SFT and alignment (on when their sections are set). Each starts from the
        previous one's model; eval and export use the last."""
        return [stage for stage in MODEL_STAGES if self.stage_enabled(stage)]

    @property
    def final_model_stage(self) -> str | None:
        stages = self.model_stages()
        return stages[-1] if stages else None

    def previous_model_stage(self, stage: str) -> str | None:
        """The model stage whose model `stage` starts from (None: the base model). For a stage that
        does not produce a model (eval, export), the last enabled model stage."""
        stages = self.model_stages()
        before = stages[: stages.index(stage)] if stage in stages else stages
        return before[-1] if before else None

    # ------------------------------------------------------------------ data for fingerprints
    @property
    def source_dir(self) -> Path | None:
        """The folder of the config file this was loaded from (relative paths resolved against it)."""
        return self._source_dir

    def _dump_context(self) -> dict[str, Any] | None:
        return {RELATIVE_TO: str(self._source_dir)} if self._source_dir is not None else None

    def section(self, name: str) -> dict[str, Any]:
        """The resolved settings of one section, as plain JSON-able data, with paths relative to the
        config file's folder (so a moved or cloned project hashes the same)."""
        value = getattr(self, name)
        return value.model_dump(mode="json", context=self._dump_context()) if hasattr(value, "model_dump") else value

    def result_section(self, name: str) -> Any:
        """Like `section`, without the settings that cannot change a result (logging, resume policy,
        supervision): what stage fingerprints and checkpoint resume keys hash. A dotted name
        (`eval.split`) is one setting of a section, for stages that read only that."""
        value = self
        for part in name.split("."):
            value = None if value is None else getattr(value, part)
        if not isinstance(value, Section):
            return value
        return None if value.volatile else result_settings(value, self._dump_context())

    def relative(self, path: str | Path) -> str:
        """`path` as named in fingerprints and manifests: a file shipped with domaintune as
        'package:domaintune/...', any other relative to the config file's folder (so a moved or
        cloned project, with the folders it refers to, keeps its fingerprints)."""
        import os

        p = Path(path)
        if not p.is_absolute():
            return str(path)
        if p.resolve().is_relative_to(_PACKAGE_DIR):
            return f"package:domaintune/{p.resolve().relative_to(_PACKAGE_DIR).as_posix()}"
        if self._source_dir is None:
            return str(path)
        return Path(os.path.relpath(p, self._source_dir)).as_posix()

    @property
    def run_path(self) -> Path:
        return Path(self.runs_dir) / self.name
