"""`domaintune validate`: everything that can be checked before a run starts, reported at once.

Schema errors, cross-field rules included, come from the config package's section validators; this
adds what needs the file system or the machine: input files exist, the model is reachable, optional
packages and plugins import, GPU-only options are not set on a machine without a GPU.
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
    return problems + check_scorer(cfg.data.quality.scorer)


def check_scorer(scorer: str | None) -> list[str]:
    """A quality scorer must import now, not after the corpus was read."""
    if scorer is None:
        return []
    from domaintune.registry import import_target

    try:
        obj = import_target(scorer)
    except Exception as exc:  # noqa: BLE001 - any import failure of user code is reported, not raised
        return [f"data.quality.scorer: cannot import '{scorer}': {type(exc).__name__}: {exc} "
                f"(write 'package.module:attr', importable from this environment)"]
    return [] if callable(obj) else [f"data.quality.scorer: '{scorer}' is not callable"]


def _gpu_method(key: str, method: str, gpu: bool, cpu_hint: str) -> list[str]:
    """qlora needs a CUDA GPU and bitsandbytes (the same rule for every training section)."""
    if method != "qlora":
        return []
    problems = [] if gpu else [f"{key}: 'qlora' loads 4-bit NF4 weights with bitsandbytes and needs a CUDA GPU; "
                               f"on this CPU machine {cpu_hint}"]
    if not _has("bitsandbytes"):
        problems.append(f"{key}: 'qlora' needs bitsandbytes: pip install 'domaintune[qlora]'")
    return problems


def _gpu_precision(key: str, precision: str, gpu: bool) -> list[str]:
    return [f"{key}: 'fp16' needs a CUDA GPU; use 'bf16' or 'fp32' on CPU"] if precision == "fp16" and not gpu else []


LORA_HINT = "use 'lora' (same adapter, full-precision base)"


def check_machine(cfg: Config) -> list[str]:
    """Options that need a GPU or an optional package."""
    problems = []
    gpu = _cuda()
    if cfg.mix is not None:
        problems += _gpu_method("train.method", cfg.train.method, gpu, LORA_HINT)
        problems += _gpu_precision("train.precision", cfg.train.precision, gpu)
        problems += missing_packages(cfg.train.logging.report_to, "train.logging.report_to")
    if cfg.model.attn_implementation == "flash_attention_2":
        if not gpu:
            problems.append("model.attn_implementation: 'flash_attention_2' needs a CUDA GPU; use 'sdpa'")
        if not _has("flash_attn"):
            problems.append("model.attn_implementation: 'flash_attention_2' needs flash-attn: "
                            "pip install 'domaintune[flash]'")
    if cfg.runtime.device == "cuda" and not gpu:
        problems.append("runtime.device: 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return problems


def check_mix_budget(cfg: Config) -> list[str]:
    """A budget below one row packs nothing. Reported by `validate` rather than the schema, so tiny
    test and tooling configs still load."""
    if cfg.mix and cfg.mix.tokens < min(cfg.mix.bucket_lengths):
        return [f"mix.tokens ({cfg.mix.tokens}) is smaller than one row (smallest bucket "
                f"{min(cfg.mix.bucket_lengths)})"]
    return []


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
    problems += _gpu_method("sft.method", cfg.sft.method, gpu, f"{LORA_HINT} or 'auto' (skips qlora)")
    problems += _gpu_precision("sft.precision", cfg.sft.precision, gpu)
    problems += missing_packages(cfg.sft.logging.report_to, "sft.logging.report_to")
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
    for section in ("train", "sft"):
        auto_eval = getattr(getattr(cfg, section), "auto_eval", None) if getattr(cfg, section) else None
        if auto_eval:
            entries += [(f"{section}.auto_eval.tasks[{i}]", e) for i, e in enumerate(auto_eval.tasks)]
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
    gpu = _cuda()
    return (problems + _gpu_method("align.method", cfg.align.method, gpu, LORA_HINT)
            + _gpu_precision("align.precision", cfg.align.precision, gpu))


def check_export(cfg: Config) -> list[str]:
    """GGUF needs the gguf package, K-quants llama-cpp-python, INT8 torchao."""
    from domaintune.config.export import GGUF_KQUANTS

    e, problems = cfg.export, []
    if e.gguf and not _has("gguf"):
        problems.append("export.gguf: needs the gguf package: pip install 'domaintune[gguf]'")
    kquants = [f for f in e.gguf if f in GGUF_KQUANTS]
    if kquants and not _has("llama_cpp"):
        problems.append(f"export.gguf: {', '.join(kquants)} are K-quants, which only llama.cpp's quantizer writes: "
                        f"pip install 'domaintune[kquant]' (llama-cpp-python, a source build of llama.cpp), "
                        f"or use q4_0/q4_1/q5_0/q5_1/q8_0")
    if e.quantize == "int8" and not _has("torchao"):
        problems.append("export.quantize: int8 needs torchao: pip install 'domaintune[int8]'")
    return problems


def validate(cfg: Config) -> list[str]:
    return (check_files(cfg) + check_machine(cfg) + check_mix_budget(cfg) + check_model_context(cfg)
            + check_data_engine(cfg) + check_sft(cfg) + check_tasks(cfg) + check_align(cfg) + check_export(cfg)
            + cfg.serve.problems())
