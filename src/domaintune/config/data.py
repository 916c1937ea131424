"""The `data` section: sources, normalization, quality filters, PII, dedup, split, engine."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, field_validator, model_validator

from domaintune.config.base import FilePath, Section


class SourceConfig(Section):
    path: FilePath = Field(description="A file, a folder (read recursively) or a glob.")
    stream: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                        description="Stream the documents belong to, e.g. english, chinese, finance.")
    name: str | None = Field(None, description="Source name for lineage; defaults to the path.")
    format: Literal["auto", "jsonl", "txt", "md", "csv", "html", "pdf", "docx", "parquet", "chat"] = Field(
        "auto", description="File format; auto: from the file extension.")
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

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        # A typo here would otherwise quarantine every file as bad_encoding after reading the corpus.
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding '{value}'; use a Python codec name such as utf-8, gb18030, "
                                 f"latin-1, or 'auto'") from None
        return value


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
    train: float = Field(0.8, ge=0, le=1, description="Share of each stream's documents for training.")
    val: float = Field(0.1, ge=0, le=1, description="Share held out for validation (held-out loss).")
    test: float = Field(0.1, ge=0, le=1, description="Share held out for the eval stage.")

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
    dictionaries: dict[str, FilePath] = Field(
        default_factory=dict, description="TYPE -> text file with one entry per line (e.g. customer names).")
    allow: list[str] = Field(
        default_factory=list, description="Exact values never redacted: public contacts such as a company "
                                          "hotline or support address.")
    salt: str = Field("domaintune", description="Salt for action=hash. It is recorded in run manifests: for a "
                                                "secret salt use salt_file.")
    salt_file: FilePath | None = Field(
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
    sources: list[SourceConfig] = Field(min_length=1, description="Where the text comes from, and its stream.")
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig, description="Near-duplicate detection.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="How the sharded read phase executes.")
    max_record_bytes: int = Field(8 << 20, ge=1024, description="Rows/lines/files larger than this are "
                                                                 "quarantined (huge lines).")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig, description="Text normalization.")
    rules_file: FilePath | None = Field(
        None, description="YAML with rewrite rules and a protected glossary (see README, data governance).")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Document quality filters.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="Personal data detection and redaction.")
    exact_dedup: bool = Field(True, description="Drop documents whose normalized text was already seen.")
    min_chars: int = Field(20, ge=0, description="Drop documents shorter than this after normalization.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Deterministic train/val/test split.")
    max_reject_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail the stage if more than this share of records is rejected."
    )
