"""THE config model: one strict pydantic root with one section per stage.

Rules (see DESIGN.md): unknown keys are errors naming the dotted path with a did-you-mean;
all problems are reported at once; defaults live here with field docs; relative paths resolve
against the config file's folder; `key.path=value` overrides apply before validation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from domaintune.errors import ConfigError
from domaintune.registry import suggest

STAGE_SECTIONS = ("data", "mix", "train", "eval", "export")


def _parse_count(value: Any) -> Any:
    """Accept 50_000, '50k', '2.5M', '1B' for token budgets."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbB]?)\s*", value)
        if not m:
            raise ValueError(f"'{value}' is not a count; write e.g. 200000, '200k', '50M' or '1B'")
        scale = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[m.group(2).lower()]
        return int(float(m.group(1)) * scale)
    return value


Count = Annotated[int, BeforeValidator(_parse_count), Field(gt=0)]
CountOrZero = Annotated[int, BeforeValidator(_parse_count), Field(ge=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- model
class ModelConfig(Section):
    base: str = Field(description="Hub id (org/name), a local model folder, or a .gguf file.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    gguf_file: str | None = Field(
        None, description="GGUF file name inside `base` (slow: prefer `domaintune models import-gguf`)."
    )
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint.")
    allow_pickle: bool = Field(
        False, description="Allow pickled *.bin weights. Off: only safetensors load (pickle runs code)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="flash_attention_2 needs a CUDA GPU and the flash-attn package."
    )
    new_tokens: list[str] = Field(
        default_factory=list, description="Domain tokens to add to the vocabulary; new rows start as the "
                                          "mean of the embeddings of the sub-tokens they replace.")


# --------------------------------------------------------------------------- data
class SourceConfig(Section):
    path: str = Field(description="A file, a folder (read recursively) or a glob.")
    stream: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                        description="Stream the documents belong to, e.g. english, chinese, finance.")
    name: str | None = Field(None, description="Source name for lineage; defaults to the path.")
    format: Literal["auto", "jsonl", "txt", "md", "csv", "html", "pdf", "docx", "parquet", "chat"] = "auto"
    text_field: str = Field("text", description="Field holding the text in jsonl/csv rows.")
    id_field: str | None = Field(None, description="Field holding a stable id; else path+line.")
    encoding: str = Field("utf-8", description="Encoding of txt/md/html/csv files: a codec name, or 'auto' to "
                                               "detect it (charset-normalizer). jsonl is always UTF-8.")
    conversation_field: str = Field("conversation_id", description="chat: field grouping turns into one document.")
    speaker_field: str = Field("speaker", description="chat: field naming who speaks a turn.")
    turn_field: str | None = Field("turn", description="chat: field ordering the turns (else file order).")
    html: Literal["main", "all"] = Field(
        "main", description="html: 'main' keeps the page's main content (trafilatura: no navigation, footer or "
                            "cookie banner; falls back to all text when none is found); 'all' keeps every "
                            "visible block, one per line.")


class NormalizeConfig(Section):
    unicode: Literal["NFKC", "NFC", "none"] = Field(
        "NFKC", description="NFKC folds full-width ASCII and compatibility forms."
    )
    whitespace: bool = Field(True, description="Collapse runs of spaces/tabs inside lines (indentation kept), strip "
                                   "trailing spaces, at most one blank line.")
    width: Literal["none", "half", "full"] = Field(
        "none", description="half: full-width ASCII forms and the ideographic space become ASCII; full: ASCII "
                            "punctuation right after a Chinese character becomes its full-width form (，。：；！？).")
    chinese: Literal["none", "t2s", "s2t"] = Field(
        "none", description="Convert traditional to simplified Chinese (t2s) or back (s2t), with OpenCC.")


class SplitConfig(Section):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    stratify: str = Field(
        "stream", pattern=r"^(stream|source|meta\.[A-Za-z0-9_.-]+)$",
        description="Within each stream, split each 'source' or each value of 'meta.FIELD' on its own.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train+val+test must sum to 1.0, got {total:g}")
        return self


# Codes the offline identifier (data/langid.py) can return, and the built-in PII types
# (data/pii_patterns.yaml); tests keep both lists in step with those files.
LanguageCode = Literal["zh", "en", "ja", "ko", "ru", "ar", "fr", "de", "es", "it", "pt", "nl", "other"]
PiiType = Literal["EMAIL", "PHONE", "ID_CARD", "BANK_CARD", "IP", "URL_CREDENTIALS"]


class QualityConfig(Section):
    """Document quality filters; each threshold set to null switches that filter off."""

    max_chars: int | None = Field(None, ge=1, description="Drop documents longer than this.")
    min_words: int | None = Field(3, ge=1, description="Fewest words (a Chinese character counts as one).")
    max_symbol_ratio: float | None = Field(
        0.5, ge=0, le=1, description="Most punctuation/symbol characters per non-space character.")
    max_digit_ratio: float | None = Field(0.5, ge=0, le=1, description="Most digits per non-space character.")
    max_repeated_lines: float | None = Field(
        0.5, ge=0, le=1, description="Most share of non-blank lines that repeat an earlier line.")
    max_repeated_ngrams: float | None = Field(
        0.8, ge=0, le=1, description="Most share of words inside a repeated word n-gram (see ngram_size).")
    ngram_size: int = Field(5, ge=2, description="n for max_repeated_ngrams.")
    max_boilerplate_lines: float | None = Field(
        0.5, ge=0, le=1, description="Most share of lines matching the boilerplate phrases (cookie notices, "
                                     "'all rights reserved', 版权所有 ...).")
    languages: list[LanguageCode] | None = Field(
        None, description="Keep only these languages (identified offline); null keeps all.")
    scorer: str | None = Field(
        None, description="'module:attr' of a callable text -> score (a class is instantiated once first).")
    min_score: float | None = Field(None, description="Drop documents the scorer rates below this.")

    @model_validator(mode="after")
    def _scorer_and_threshold(self) -> QualityConfig:
        if (self.scorer is None) != (self.min_score is None):
            raise ValueError("set both scorer and min_score, or neither")
        return self


class PiiConfig(Section):
    enabled: bool = Field(False, description="Find and redact personal data (see data.pii.types).")
    action: Literal["mask", "hash", "drop"] = Field(
        "mask", description="mask: <EMAIL>; hash: <EMAIL:3f2a9c1b> (salted sha256); drop: reject the document.")
    types: list[PiiType] = Field(
        default_factory=lambda: ["EMAIL", "PHONE", "ID_CARD", "BANK_CARD", "IP", "URL_CREDENTIALS"],
        description="Built-in types to look for (custom patterns and dictionaries are always used).")
    custom_patterns: dict[str, str] = Field(
        default_factory=dict, description="TYPE -> regex, e.g. {EMPLOYEE_ID: 'HB-\\d{6}'}.")
    dictionaries: dict[str, str] = Field(
        default_factory=dict, description="TYPE -> text file with one entry per line (e.g. customer names).")
    allow: list[str] = Field(
        default_factory=list, description="Exact values never redacted: public contacts such as a company "
                                          "hotline or support address.")
    salt: str = Field("domaintune", description="Salt for action=hash. It is recorded in run manifests: for a "
                                                "secret salt use salt_file.")
    salt_file: str | None = Field(
        None, description="File holding a secret salt (overrides salt): without a secret, hashes of short values "
                          "such as phone numbers can be looked up by trying them all.")
    suppress_context: bool = Field(
        False, description="Opt in: a word such as 'order no.' or 'version' just before a number (deny_context "
                           "in governance/pii_patterns.yaml) suppresses its detection; the suppressed count per "
                           "type is reported (pii_suppressed_by_type). Off by default: a number that passes its "
                           "checks is redacted whatever surrounds it.")


class NearDedupConfig(Section):
    enabled: bool = Field(True, description="Find near-duplicates with MinHash LSH (datasketch).")
    threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity that makes two "
                                                         "documents near-duplicates.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (accuracy vs speed).")
    ngram: int = Field(5, ge=1, description="Word (or CJK character) shingle size.")
    action: Literal["drop", "keep"] = Field(
        "drop", description="'drop' keeps one copy per cluster; 'keep' keeps all but in the same split.")


class EngineConfig(Section):
    executor: Literal["local", "slurm", "ray"] = Field(
        "local", description="datatrove executor for the sharded read+steps phase.")
    tasks: int | None = Field(None, ge=1, description="Shards (default: one per file, at most 64).")
    workers: int = Field(1, ge=1, description="Shards processed at once (local executor).")
    slurm_partition: str | None = Field(None, description="slurm: partition for the shard jobs.")
    slurm_time: str = Field("04:00:00", description="slurm: time limit per shard job.")
    ray_address: str | None = Field(
        None, description="ray: the cluster to join ('auto': the one `ray start` runs on this machine; "
                          "'ray://host:10001': a remote head). null starts a local Ray on this machine. "
                          "A process that already called ray.init (a notebook, a test) keeps that cluster.")
    cpus_per_task: int = Field(1, ge=1, description="slurm/ray: CPUs reserved per shard task.")
    mem_per_cpu_gb: float = Field(2, gt=0, description="slurm/ray: memory reserved per CPU of a shard task, in GB "
                                                       "(Slurm rounds it up to whole GB).")


class DataConfig(Section):
    sources: list[SourceConfig] = Field(min_length=1)
    near_dedup: NearDedupConfig = NearDedupConfig()
    engine: EngineConfig = EngineConfig()
    max_record_bytes: int = Field(8 << 20, ge=1024, description="Rows/lines/files larger than this are "
                                                                 "quarantined (huge lines).")
    normalize: NormalizeConfig = NormalizeConfig()
    rules_file: str | None = Field(
        None, description="YAML with rewrite rules and a protected glossary (see README, data governance).")
    quality: QualityConfig = QualityConfig()
    pii: PiiConfig = PiiConfig()
    exact_dedup: bool = Field(True, description="Drop documents whose normalized text was already seen.")
    min_chars: int = Field(20, ge=0, description="Drop documents shorter than this after normalization.")
    split: SplitConfig = SplitConfig()
    max_reject_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail the stage if more than this share of records is rejected."
    )


# --------------------------------------------------------------------------- mix
class MixConfig(Section):
    mixture: dict[str, float] = Field(
        description="Stream -> relative weight, in tokens (e.g. {english: 3, chinese: 6, domain: 1})."
    )
    tokens: Count = Field(description="Training token budget, e.g. 200k or 50M.")
    seq_len: int = Field(1024, ge=16, description="Row length when `buckets` is not set.")
    buckets: list[int] | None = Field(
        None, description="Row lengths, e.g. [2048, 4096, 8192, 32768]: each document goes to the smallest "
                          "that fits; longer ones are split at paragraph/sentence boundaries.")
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
        if self.buckets is not None and (not self.buckets or min(self.buckets) < 16
                                         or sorted(set(self.buckets)) != self.buckets):
            raise ValueError(f"buckets must be increasing, unique and >= 16 (got {self.buckets})")
        return self

    @property
    def bucket_lengths(self) -> list[int]:
        return self.buckets or [self.seq_len]


# --------------------------------------------------------------------------- benchmark tasks
class EvalTaskConfig(Section):
    task: str = Field(description="Built-in task name (mmlu, ceval, cmmlu, gsm8k, financeiq) or a task YAML path.")
    data: str | None = Field(None, description="Your local copy of the task's data (file or folder); "
                                               "default: the task YAML's own path. Nothing is downloaded.")
    fewshot_data: str | None = Field(None, description="Few-shot source (e.g. the dev split); default: the "
                                                       "task's own items.")
    subjects: list[str] | None = Field(None, description="Subjects to keep (e.g. MMLU's econometrics).")
    limit: int | None = Field(None, ge=1, description="Items at most, taken round-robin across subjects.")
    shots: int | None = Field(None, ge=0, description="Few-shot examples; default: the task's own setting.")
    group: Literal["general", "domain"] = Field(
        "general", description="'general' tasks guard against forgetting; 'domain' tasks must improve.")


# --------------------------------------------------------------------------- train
class AdapterConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class AutoEvalConfig(Section):
    every: int = Field(ge=1, description="Optimizer steps between benchmark evaluations during training.")
    tasks: list[EvalTaskConfig] = Field(min_length=1, description="The fast subset scored at each evaluation.")
    limit: int | None = Field(50, ge=1, description="Items per task at each evaluation (keeps it fast).")
    batch_size: int = Field(8, ge=1)
    metric: Literal["acc", "acc_norm"] = Field("acc", description="Multiple-choice metric the stopping rule "
                                                                  "reads (generation tasks: exact_match).")
    patience: int = Field(3, ge=2, description="K: the stopping rule looks at the last K evaluations.")
    min_gain_per_mtokens: float | None = Field(
        None, description="Stop when the domain metric gained less than this (accuracy points per million "
                          "trained tokens) over the last `patience` evaluations; unset: never stop early.")


class TrainConfig(Section):
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="qlora needs a CUDA GPU and bitsandbytes."
    )
    adapter: AdapterConfig = AdapterConfig()
    batch_size: int = Field(8, ge=1, description="Packed rows per micro-batch (when batch_tokens is unset).")
    batch_tokens: Count | None = Field(
        None, description="Token budget per micro-batch: a batch of bucket L holds batch_tokens // L rows, "
                          "so memory stays flat across buckets.")
    grad_accum: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1, description="Passes over the mixed data (ignored if max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp16 needs a CUDA GPU.")
    log_every: int = Field(5, ge=1)
    eval_every: int | None = Field(
        None, ge=1, description="Steps between held-out loss evaluations per stream (also run at the end).")
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints (atomic, verified).")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept (older ones are deleted).")
    resume: str = Field("auto", description="'auto': continue from the newest intact checkpoint; 'never'; "
                                            "or a checkpoint folder.")
    allow_config_change: bool = Field(
        False, description="Resume even if seed, schedule, data or base model changed (the diff is logged).")
    nan_policy: Literal["skip", "stop"] = Field(
        "skip", description="Non-finite loss or gradient: 'skip' the step (weights unchanged, counted) or "
                            "'stop' (diagnostics saved, exit non-zero, last good checkpoint kept).")
    max_bad_steps: int = Field(5, ge=1, description="Abort after this many consecutive non-finite steps.")
    spike_factor: float | None = Field(
        None, gt=1, description="A step whose loss exceeds this factor times the running average is a spike.")
    spike_policy: Literal["warn", "rollback"] = Field(
        "warn", description="On a spike: 'warn' (keep the update), or 'rollback' (restore the last checkpoint and "
                            "skip every batch since it, the spiking one included; needs save_every).")
    max_rollbacks: int = Field(3, ge=1, description="Spike rollbacks per run; later spikes only skip their batch.")
    max_restarts: int = Field(3, ge=0, description="--supervise: restarts of a crashed training process.")
    restart_backoff_s: float = Field(5.0, ge=0, description="--supervise: first wait before a restart (doubles).")
    hang_timeout_s: float | None = Field(
        None, gt=0, description="--supervise: kill and restart when no step completes for this long.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Metric backends besides the always-on metrics.jsonl; wandb/mlflow are opt-in.")
    train_embeddings: bool = Field(
        False, description="Also train input embeddings and lm_head (needed when adding new tokens).")
    auto_eval: AutoEvalConfig | None = Field(
        None, description="Benchmark a fast task subset every N steps, logged with the training metrics; "
                          "optionally stop when the domain metric stops improving per unit of compute.")


# --------------------------------------------------------------------------- sft
class SFTDataConfig(Section):
    path: str = Field(description="A JSONL file (or JSON list) of conversations.")
    format: Literal["auto", "alpaca", "sharegpt", "openai"] = Field(
        "auto", description="auto: per row, from its fields (instruction / conversations / messages).")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                             description="Name for per-source losses; defaults to the file name.")


class PrefixConfig(Section):
    num_virtual_tokens: int = Field(16, ge=1, description="Trainable prefix length (peft PrefixTuningConfig).")


class SFTAutoConfig(Section):
    metric: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss", description="Held-out metric on assistant tokens that decides whether an attempt is enough.")
    target: float = Field(description="val_loss at most / val_accuracy at least this value.")
    methods: list[Literal["qlora", "lora", "full"]] = Field(
        default_factory=lambda: ["qlora", "lora", "full"],
        description="Attempts in order; qlora is skipped (and recorded) without a CUDA GPU.")


# Supervisor settings are global: they stay under `train` even when only SFT runs.
SUPERVISOR_KEYS = ("max_restarts", "restart_backoff_s", "hang_timeout_s")


class SFTConfig(TrainConfig):
    """Supervised fine-tuning on conversations; the optimization keys are those of `train`."""

    method: Literal["lora", "qlora", "full", "prefix", "auto"] = Field(
        "lora", description="qlora needs a CUDA GPU; prefix = peft prefix tuning; auto = qlora -> lora -> full "
                            "until sft.auto.target is met.")
    data: list[SFTDataConfig] = Field(min_length=1)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each file held out for loss/accuracy.")
    template: str | None = Field(
        None, description="Chat template: null = the tokenizer's own; a shipped name (chatml, llama3, qwen, "
                          "alpaca); or a .jinja file. Saved with the model.")
    max_len: int = Field(1024, ge=16, description="Longest tokenized conversation (and packed row).")
    truncation: Literal["drop", "history", "answer"] = Field(
        "drop", description="Longer conversations: drop (quarantined), history (drop oldest exchanges), "
                            "answer (cut the final answer; counted and reported).")
    packing: bool | None = Field(
        None, description="Exact packing (no cross-example attention); null = on, except for prefix tuning.")
    prefix: PrefixConfig = PrefixConfig()
    auto: SFTAutoConfig | None = Field(None, description="Target for method: auto.")
    max_invalid_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail if more than this share of rows is quarantined.")
    epochs: int = Field(3, ge=1, description="Passes over the SFT data (ignored if max_steps is set).")

    @model_validator(mode="after")
    def _consistent(self) -> SFTConfig:
        problems = [f"{k}: supervisor settings are global; set train.{k}" for k in SUPERVISOR_KEYS
                    if k in self.model_fields_set]
        if self.method == "prefix" and self.packing:
            problems.append("packing: prefix tuning cannot use exact packing (the prefix would be shared by every "
                            "packed example); set packing: false")
        if self.method == "auto" and self.auto is None:
            problems.append("method 'auto' needs auto.target (e.g. auto: {metric: val_loss, target: 1.5})")
        if self.method == "auto" and not self.val_fraction:
            problems.append("method 'auto' scores each attempt on held-out rows; set val_fraction > 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def packed(self) -> bool:
        return self.method != "prefix" if self.packing is None else self.packing


# --------------------------------------------------------------------------- align
class PreferenceDataConfig(Section):
    general: list[str] = Field(
        default_factory=list, description="JSONL files of general preference pairs (reward model stage 1).")
    domain: list[str] = Field(
        min_length=1, description="JSONL files of domain preference pairs (reward model stage 2, filter, DPO).")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="Share of pairs held out for accuracy/margin.")
    max_reject_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail if more than this share of rows is malformed (quarantined).")


class RewardModelConfig(Section):
    enabled: bool = Field(True, description="Train a reward model (needed by the confidence filter).")
    two_stage: bool = Field(True, description="First on data.general, then continue on data.domain.")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Steps per reward stage; overrides epochs.")
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)


class ConfidenceFilterConfig(Section):
    enabled: bool = Field(True, description="Drop domain pairs whose reward-margin interval contains 0.")
    method: Literal["mc_dropout", "ensemble"] = Field(
        "mc_dropout", description="Margin samples from dropout-on scoring passes, or from K reward models "
                                  "trained with different seeds on bootstrap resamples.")
    samples: int = Field(8, ge=2, description="Dropout passes, or ensemble members.")
    dropout: float = Field(0.1, gt=0, lt=1, description="mc_dropout: dropout rate during the scoring passes.")
    level: float = Field(0.9, gt=0, lt=1, description="Confidence level of the bootstrap interval.")
    drop_reversed: bool = Field(
        True, description="Also drop pairs the reward model confidently prefers the other way (likely mislabeled).")


class DPOSection(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    sft_weight: float = Field(
        0.0, ge=0, description="Weight of an SFT loss on the chosen answers mixed in (limits drift); 0: pure DPO.")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(2, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_len: int = Field(512, ge=16, description="Prompt + answer tokens (longer pairs are truncated).")
    eval_every: int | None = Field(None, ge=1, description="Steps between held-out evaluations (also at the end).")


class AlignConfig(Section):
    data: PreferenceDataConfig
    method: Literal["lora", "qlora", "full"] = Field("lora", description="qlora needs a CUDA GPU and bitsandbytes.")
    adapter: AdapterConfig = AdapterConfig()
    reward: RewardModelConfig = RewardModelConfig()
    filter: ConfidenceFilterConfig = ConfidenceFilterConfig()
    dpo: DPOSection = DPOSection()

    @model_validator(mode="after")
    def _filter_needs_reward(self) -> AlignConfig:
        if self.filter.enabled and not self.reward.enabled:
            raise ValueError("filter.enabled needs reward.enabled (pairs are scored by the reward model)")
        return self


# --------------------------------------------------------------------------- eval
class GateConfig(Section):
    enabled: bool = Field(True, description="Fail the eval stage (exit code 3, export does not run) on a breach.")
    domain_streams: list[str] = Field(default_factory=lambda: ["domain"],
                                      description="Streams that must improve; every other stream is general.")
    max_general_ppl_rise_pct: float | None = Field(
        5.0, description="A general stream's perplexity may rise at most this much (percent) vs the base model.")
    max_general_task_drop: float | None = Field(
        1.0, description="A general task's score may drop at most this many points (accuracy x 100).")
    min_domain_ppl_drop_pct: float | None = Field(
        None, description="Each domain stream's perplexity must fall at least this much (percent).")
    min_domain_task_gain: float | None = Field(
        None, description="Each domain task's score must rise at least this many points.")
    metric: Literal["acc", "acc_norm"] = Field("acc", description="Multiple-choice metric the gate reads "
                                                                  "(generation tasks use exact_match).")


class EvalConfig(Section):
    split: Literal["val", "test"] = "test"
    streams: list[str] | None = Field(None, description="Streams to score; default: all data streams.")
    max_docs: int | None = Field(200, ge=1, description="Documents per stream (deterministic subset).")
    max_tokens: Count | None = Field(
        None, description="Token budget per stream: whole documents are added until it is reached.")
    window: int = Field(1024, ge=16, description="Tokens per scoring window.")
    stride: int = Field(512, ge=1, description="Window step for documents longer than `window`.")
    batch_size: int = Field(4, ge=1)
    compare_base: bool = Field(True, description="Also score the base model (cached by fingerprint).")
    tasks: list[EvalTaskConfig] = Field(default_factory=list, description="Benchmark tasks, base vs tuned.")
    task_batch_size: int = Field(8, ge=1, description="Requests per forward pass when scoring tasks.")
    gate: GateConfig = GateConfig()
    report: bool = Field(True, description="Write eval_report.html + eval_report.json.")


# --------------------------------------------------------------------------- export
class ExportConfig(Section):
    merge: bool = Field(True, description="Merge adapters into the base weights (a standalone model).")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    sample_prompts: list[str] = Field(default_factory=list, description="Answered after export.")
    max_new_tokens: int = Field(64, ge=1)


class RuntimeConfig(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice.")


# Stages that produce a model, in order, and the config section whose presence switches each on.
MODEL_STAGES = {"train": "mix", "sft": "sft", "align": "align"}


class Config(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Run name: outputs go to runs_dir/name.")
    runs_dir: str = "runs"
    seed: int = 0
    model: ModelConfig
    data: DataConfig | None = Field(None, description="Stage 1 (governed pre-training text); omit to skip.")
    mix: MixConfig | None = Field(
        None, description="Stage 2 (token mixture + packing); omit to skip continual pre-training (the train stage).")
    train: TrainConfig = TrainConfig()
    sft: SFTConfig | None = Field(None, description="Supervised fine-tuning on conversations; omit to skip.")
    align: AlignConfig | None = Field(
        None, description="Preference alignment (reward model, confidence filter, DPO); omit to skip.")
    eval: EvalConfig = EvalConfig()
    export: ExportConfig = ExportConfig()
    runtime: RuntimeConfig = RuntimeConfig()

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
        gate = self.eval.gate  # the default ["domain"] may name no stream; a value the user wrote must
        if gate.enabled and "domain_streams" in gate.model_fields_set:
            problems += [f"eval.gate.domain_streams: unknown stream '{k}'{suggest(k, streams)}"
                         for k in gate.domain_streams if k not in streams]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def model_stages(self) -> list[str]:
        """The enabled stages that produce a model, in pipeline order: continual pre-training (on when
        `mix` is set), then SFT and alignment (on when their sections are set). Each starts from the
        previous one's model; eval and export use the last."""
        return [stage for stage, section in MODEL_STAGES.items() if getattr(self, section, None) is not None]

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

    def section(self, name: str) -> dict[str, Any]:
        """The resolved settings of one section, as plain JSON-able data (hashed for fingerprints)."""
        return getattr(self, name).model_dump(mode="json")

    @property
    def run_path(self) -> Path:
        return Path(self.runs_dir) / self.name


# --------------------------------------------------------------------------- loading
def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (so 3, true, [a, b] work)."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override '{item}' is not key.path=value")
            continue
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            if not isinstance(node.get(part, {}), dict):
                problems.append(f"override '{key}': '{part}' is not a section")
                break
            node = node.setdefault(part, {})
        else:
            node[leaf] = yaml.safe_load(value) if value != "" else None
    if problems:
        raise ConfigError(problems, source="command-line overrides")
    return raw


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model reached by following `loc` (used for did-you-mean)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def format_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "(root)"
        if e["type"] == "extra_forbidden":
            hint = suggest(str(loc[-1]), _fields_at(Config, loc[:-1]))
            problems.append(f"{path}: unknown key{hint}")
        elif e["type"] == "missing":
            problems.append(f"{path}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {msg} (got {e.get('input')!r:.80})")
    return problems


def _task_entries(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark task entries of eval.tasks and train.auto_eval.tasks (their paths resolve too)."""
    sections = [raw.get("eval"), ((raw.get("train") or {}).get("auto_eval") if isinstance(raw.get("train"), dict)
                                  else None)]
    return [e for sec in sections if isinstance(sec, dict) for e in (sec.get("tasks") or []) if isinstance(e, dict)]


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> None:
    """Make file paths absolute relative to the config file's folder (one rule for every path)."""
    def resolve(p: str) -> str:
        return p if Path(p).is_absolute() else str((base_dir / p).resolve())

    for src in (raw.get("data") or {}).get("sources") or []:
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            src["path"] = resolve(src["path"])
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if isinstance(data.get("rules_file"), str):
        data["rules_file"] = resolve(data["rules_file"])
    pii = data.get("pii") if isinstance(data.get("pii"), dict) else {}
    if isinstance(pii.get("salt_file"), str):
        pii["salt_file"] = resolve(pii["salt_file"])
    if isinstance(pii.get("dictionaries"), dict):
        pii["dictionaries"] = {k: resolve(v) if isinstance(v, str) else v for k, v in pii["dictionaries"].items()}
    sft = raw.get("sft") if isinstance(raw.get("sft"), dict) else {}
    for src in sft.get("data") or []:
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            src["path"] = resolve(src["path"])
    if isinstance(sft.get("template"), str) and sft["template"].endswith(".jinja"):
        sft["template"] = resolve(sft["template"])
    align_data = (raw.get("align") or {}).get("data") if isinstance(raw.get("align"), dict) else None
    for key in ("general", "domain"):
        if isinstance(align_data, dict) and isinstance(align_data.get(key), list):
            align_data[key] = [resolve(p) if isinstance(p, str) else p for p in align_data[key]]
    if isinstance(raw.get("runs_dir", "runs"), str):
        raw["runs_dir"] = resolve(raw.get("runs_dir", "runs"))
    for entry in _task_entries(raw):
        for key in ("task", "data", "fewshot_data"):
            value = entry.get(key)
            if isinstance(value, str) and not value.startswith("package:") and (
                    key != "task" or value.endswith((".yaml", ".yml"))):
                entry[key] = resolve(value)
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("base"), str):
        base = model["base"]
        if base.startswith((".", "/", "~")) or (base_dir / base).exists():
            model["base"] = resolve(str(Path(base).expanduser()))


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"], source=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping of sections"], source=str(path))
    raw = apply_overrides(raw, overrides or [])
    _resolve_paths(raw, path.parent.resolve())
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err), source=str(path)) from None
