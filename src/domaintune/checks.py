"""`domaintune validate`: everything that can be checked before a run starts, reported at once.

Schema errors come from config.py; this adds what needs the file system or the machine:
input files exist, the model is reachable, optional packages are installed, GPU-only options
are not set on a machine without a GPU.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import re
import shutil
from pathlib import Path

from domaintune.config import Config
from domaintune.trackers import missing_packages

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_files(cfg: Config) -> list[str]:
    problems = check_data_files(cfg) if cfg.data else []
    base = cfg.model.base
    if not Path(base).exists() and not HUB_ID.match(base):
        problems.append(f"model.base: '{base}' is neither an existing file/folder nor a hub id like "
                        f"'HuggingFaceTB/SmolLM2-135M'")
    return problems


def check_data_files(cfg: Config) -> list[str]:
    problems = []
    for i, src in enumerate(cfg.data.sources):
        p = Path(src.path)
        if not (p.exists() or glob.glob(src.path, recursive=True)):
            problems.append(f"data.sources[{i}].path: nothing matches '{src.path}' "
                            f"(relative paths are resolved against the config file's folder)")
    governance = [("data.rules_file", cfg.data.rules_file)]
    governance += [(f"data.pii.dictionaries.{k}", v) for k, v in cfg.data.pii.dictionaries.items()]
    governance += [("data.pii.salt_file", cfg.data.pii.salt_file)]
    problems += [f"{key}: file not found: {path}" for key, path in governance if path and not Path(path).is_file()]
    if cfg.data.normalize.chinese != "none" and not _has("opencc"):
        problems.append(f"data.normalize.chinese: '{cfg.data.normalize.chinese}' needs OpenCC: "
                        "pip install 'domaintune[zh]'")
    return problems


def check_machine(cfg: Config) -> list[str]:
    """Options that need a GPU or an optional package."""
    problems = []
    gpu = _cuda()
    if cfg.train.method == "qlora":
        if not gpu:
            problems.append("train.method: 'qlora' loads 4-bit weights with bitsandbytes and needs a CUDA "
                            "GPU; on this CPU machine use 'lora' (same adapter, full-precision base)")
        if not _has("bitsandbytes"):
            problems.append("train.method: 'qlora' needs bitsandbytes: pip install 'domaintune[qlora]'")
    if cfg.model.attn_implementation == "flash_attention_2":
        if not gpu:
            problems.append("model.attn_implementation: 'flash_attention_2' needs a CUDA GPU; use 'sdpa'")
        if not _has("flash_attn"):
            problems.append("model.attn_implementation: 'flash_attention_2' needs flash-attn: "
                            "pip install 'domaintune[flash]'")
    if cfg.train.precision == "fp16" and not gpu:
        problems.append("train.precision: 'fp16' needs a CUDA GPU; use 'bf16' or 'fp32' on CPU")
    problems += missing_packages(cfg.train.report_to)
    if cfg.runtime.device == "cuda" and not gpu:
        problems.append("runtime.device: 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return problems


def check_consistency(cfg: Config) -> list[str]:
    problems = []
    if cfg.eval.stride > cfg.eval.window:
        problems.append(f"eval.stride ({cfg.eval.stride}) must be <= eval.window ({cfg.eval.window})")
    if cfg.mix and cfg.mix.tokens < min(cfg.mix.bucket_lengths):
        problems.append(f"mix.tokens ({cfg.mix.tokens}) is smaller than one row "
                        f"(smallest bucket {min(cfg.mix.bucket_lengths)})")
    if cfg.mix and cfg.train.batch_tokens and cfg.train.batch_tokens < max(cfg.mix.bucket_lengths):
        problems.append(f"train.batch_tokens ({cfg.train.batch_tokens}) is smaller than the largest bucket "
                        f"({max(cfg.mix.bucket_lengths)}): such rows would still be batched one at a time")
    if cfg.model.new_tokens and cfg.train.method != "full" and not cfg.train.train_embeddings:
        problems.append("model.new_tokens: an adapter cannot train the new embedding rows; set "
                        "train.train_embeddings: true (or train.method: full)")
    if cfg.train.spike_policy == "rollback" and not (cfg.train.spike_factor and cfg.train.save_every):
        problems.append("train.spike_policy: 'rollback' needs train.spike_factor (what a spike is) and "
                        "train.save_every (checkpoints to roll back to)")
    if cfg.train.method == "full" and cfg.export.merge is False:
        problems.append("export.merge: false only makes sense with an adapter (train.method lora/qlora)")
    return problems


def check_model_context(cfg: Config) -> list[str]:
    """Rows longer than the model's context would fail (or silently extrapolate) mid-run."""
    config_file = Path(cfg.model.base) / "config.json"
    if cfg.mix is None or not config_file.is_file():
        return []  # hub ids are checked when they load; offline we cannot read their config
    limit = json.loads(config_file.read_text(encoding="utf-8")).get("max_position_embeddings")
    longest = max(cfg.mix.bucket_lengths)
    if limit and longest > limit:
        return [f"mix.buckets: the longest row ({longest}) exceeds the model's context "
                f"(max_position_embeddings={limit} in {config_file}); drop the larger buckets"]
    return []


def check_data_engine(cfg: Config) -> list[str]:
    """data.engine.executor slurm/ray need their package (and slurm a partition) before anything runs."""
    if cfg.data is None:
        return []
    engine = cfg.data.engine
    problems = []
    if engine.executor == "ray" and not _has("ray"):
        problems.append("data.engine.executor: 'ray' needs the ray package: pip install 'datatrove[ray]'")
    if engine.executor == "slurm":
        if shutil.which("sbatch") is None:
            problems.append("data.engine.executor: 'slurm' needs sbatch on PATH (run from a Slurm login node)")
        if not engine.slurm_partition:
            problems.append("data.engine.slurm_partition: required with executor 'slurm' (e.g. 'cpu')")
    return problems


def check_sft(cfg: Config) -> list[str]:
    """SFT data and template files, GPU-only methods, and what a prefix adapter cannot do."""
    if cfg.sft is None:
        return []
    from domaintune.instruct.templates import template_problem

    problems = [f"sft.data[{i}].path: file not found: {d.path} (relative paths are resolved against the "
                f"config file's folder)" for i, d in enumerate(cfg.sft.data) if not Path(d.path).is_file()]
    problem = template_problem(cfg.sft.template)
    problems += [problem] if problem else []
    gpu = _cuda()
    if cfg.sft.method == "qlora" and not gpu:
        problems.append("sft.method: 'qlora' loads 4-bit NF4 weights with bitsandbytes and needs a CUDA GPU; on "
                        "this CPU machine use 'lora' (same adapter, full-precision base) or 'auto' (skips qlora)")
    if cfg.sft.method == "qlora" and not _has("bitsandbytes"):
        problems.append("sft.method: 'qlora' needs bitsandbytes: pip install 'domaintune[qlora]'")
    if cfg.sft.precision == "fp16" and not gpu:
        problems.append("sft.precision: 'fp16' needs a CUDA GPU; use 'bf16' or 'fp32' on CPU")
    problems += missing_packages([t for t in cfg.sft.report_to if t not in cfg.train.report_to])
    if cfg.sft.method == "prefix" and cfg.export.merge and cfg.final_model_stage == "sft":
        problems.append("export.merge: a prefix-tuning adapter cannot be merged into the weights; set "
                        "export.merge: false (the export is the adapter plus the base model reference)")
    if cfg.sft.method == "prefix" and cfg.previous_model_stage("sft") is not None:
        problems.append("sft.method: 'prefix' starts from the base model only (a prefix adapter cannot be stored "
                        "on top of a merged continual-pre-training model); use lora or full after the train stage")
    return problems


def check_tasks(cfg: Config) -> list[str]:
    """Every benchmark task loads: its YAML is valid, its local data exists, its subjects are known."""
    from domaintune.benchmarks import load_task
    from domaintune.errors import DomainTuneError

    entries = [(f"eval.tasks[{i}]", e) for i, e in enumerate(cfg.eval.tasks)]
    if cfg.train.auto_eval:
        entries += [(f"train.auto_eval.tasks[{i}]", e) for i, e in enumerate(cfg.train.auto_eval.tasks)]
    problems = []
    for where, e in entries:
        try:
            load_task(e.task, data=e.data, fewshot_data=e.fewshot_data, subjects=e.subjects, limit=e.limit)
        except DomainTuneError as err:
            problems.append(f"{where} ({e.task}): {' '.join(str(err).split())}")
    return problems


def check_align(cfg: Config) -> list[str]:
    """Preference files exist; QLoRA alignment needs a GPU and bitsandbytes."""
    if cfg.align is None:
        return []
    problems = [f"align.data.{key}[{i}]: file not found: {path} (relative paths resolve against the config "
                f"file's folder)" for key in ("general", "domain")
                for i, path in enumerate(getattr(cfg.align.data, key)) if not Path(path).is_file()]
    if not _has("trl"):
        problems.append("align: the align stage trains with trl, which is not installed: "
                        "pip install 'domaintune[align]'")
    if cfg.align.method == "qlora":
        if not _cuda():
            problems.append("align.method: 'qlora' loads 4-bit weights with bitsandbytes and needs a CUDA GPU; "
                            "on this CPU machine use 'lora' (same adapter, full-precision base)")
        if not _has("bitsandbytes"):
            problems.append("align.method: 'qlora' needs bitsandbytes: pip install 'domaintune[qlora]'")
    return problems


def validate(cfg: Config) -> list[str]:
    return (check_files(cfg) + check_machine(cfg) + check_consistency(cfg) + check_model_context(cfg)
            + check_data_engine(cfg) + check_sft(cfg) + check_tasks(cfg) + check_align(cfg))
