"""The stage runner: run stages in order, skip those whose fingerprint is unchanged.

A stage's fingerprint hashes the config sections it reads, the fingerprints of its upstream
stages, the files/models it reads from outside the run (`inputs(cfg)`), and the package
version. Changing a setting therefore re-runs that stage and, through the chained upstream
fingerprints, everything downstream of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from domaintune import __version__, codegraph, models
from domaintune.artifacts import (
    FileHashCache,
    RunDir,
    StageResult,
    fingerprint_path,
    git_sha,
    package_versions,
    stable_hash,
)
from domaintune.config import Config
from domaintune.console import console
from domaintune.errors import StageError
from domaintune.registry import import_target, suggest


@dataclass(frozen=True)
class StageSpec:
    """A pipeline stage: `target` is a module exposing `run(cfg, run_dir)` and optional `inputs(cfg)`."""

    name: str
    target: str
    sections: tuple[str, ...]  # config keys whose values change the stage's result
    upstream: tuple[str, ...] = ()
    help: str = ""
    distributed: bool = False  # may run under torchrun / accelerate launch on several processes
    # Whether the run's config switches the stage on (None: the config's own table,
    # `Config.stage_enabled`). A stage that is off is not run, and stages downstream of it do not
    # depend on it.
    when: Callable[[Config], bool] | None = None

    def enabled(self, cfg: Config) -> bool:
        return cfg.stage_enabled(self.name) if self.when is None else self.when(cfg)


# In `upstream`, this stands for "the model this stage starts from": the previous enabled model
# stage (train -> sft -> align), see Config.previous_model_stage.
MODEL = "@model"


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped"
    wall_time_s: float
    summary: str = ""


def select_stages(specs: list[StageSpec], names: list[str] | None) -> list[StageSpec]:
    if not names:
        return list(specs)
    known = [s.name for s in specs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StageError("; ".join(f"unknown stage '{n}'{suggest(n, known)} (stages: {', '.join(known)})"
                                   for n in unknown))
    return [s for s in specs if s.name in names]


def resolve_upstream(spec: StageSpec, cfg: Config, enabled: set[str] | None = None) -> list[str]:
    """The upstream stages this run actually has: `@model` resolved, switched-off stages dropped."""
    names = []
    for u in spec.upstream:
        u = cfg.previous_model_stage(spec.name) if u == MODEL else u
        on = cfg.stage_enabled(u) if enabled is None else u in enabled  # e.g. sft reads synth only if it runs
        if u is not None and on and u not in names:
            names.append(u)
    return names


def fingerprint_details(spec: StageSpec, cfg: Config, run_dir: RunDir, module: Any,
                        enabled: set[str] | None = None) -> dict[str, Any]:
    upstream = {u: run_dir.require(u, by=spec.name)["fingerprint"]
                for u in resolve_upstream(spec, cfg, enabled)}
    inputs_fn = getattr(module, "inputs", None)
    # Named relative to the config file's folder and hashed by content: a moved or cloned project
    # keeps its fingerprints (only what it holds decides them).
    hashes = FileHashCache(run_dir.root / "cache" / "file_hashes.json")
    inputs = {cfg.relative(p): fingerprint_path(p, hashes) for p in (inputs_fn(cfg) if inputs_fn else [])}
    hashes.save()
    return {
        "config": {key: cfg.result_section(key) for key in spec.sections},
        "upstream": upstream,
        "inputs": inputs,
        "domaintune": __version__,
        "code": _code_fingerprint(module),
    }


def _code_fingerprint(module: Any) -> str:
    """Hash of the code a stage runs: its own package and every project module it imports,
    transitively (`codegraph`). Editing align's reward model re-runs align, not CPT; editing the
    packer re-runs mix and the stages that pack."""
    path = Path(getattr(module, "__file__", "") or "")
    if not path.is_file():
        return "unknown"
    try:
        path.relative_to(codegraph.SRC)
    except ValueError:  # a stage from outside the package (tests, plugins): hash the file or its package
        return fingerprint_path(path.parent) if path.name == "__init__.py" else fingerprint_path(path)
    return codegraph.code_fingerprint(path)


def is_done(run_dir: RunDir, stage: str, fingerprint: str) -> bool:
    m = run_dir.manifest(stage)
    if not m or m.get("fingerprint") != fingerprint:
        return False
    stage_path = run_dir.root / stage
    return all((stage_path / rel).exists() for rel in m.get("outputs", {}).values())


def world_size() -> int:
    """Processes in this launch: torchrun / accelerate launch set WORLD_SIZE and RANK (the
    launcher's protocol, not configuration)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _apply_runtime(cfg: Config) -> None:
    if cfg.runtime.threads:
        import torch

        torch.set_num_threads(cfg.runtime.threads)


def run_stage(spec: StageSpec, cfg: Config, run_dir: RunDir, force: bool = False,
              enabled: set[str] | None = None) -> StageOutcome:
    if world_size() > 1 and not spec.distributed:
        raise StageError(f"stage '{spec.name}' runs in one process; run it without torchrun/accelerate "
                         f"launch first (only the training stages can be launched on several processes)")
    module = import_target(spec.target)
    details = fingerprint_details(spec, cfg, run_dir, module, enabled)
    fp = stable_hash(details)
    if not force and is_done(run_dir, spec.name, fp):
        m = run_dir.manifest(spec.name) or {}
        return StageOutcome(spec.name, "skipped", 0.0, m.get("summary", ""))
    if is_main_process():
        run_dir.invalidate(spec.name)  # a half-finished re-run must never look done
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    _apply_runtime(cfg)
    result: StageResult = module.run(cfg, run_dir)
    wall = time.perf_counter() - t0
    manifest = {
        "stage": spec.name,
        "fingerprint": fp,
        "config": details["config"],
        "config_hash": stable_hash(details["config"]),
        "upstream": details["upstream"],
        "inputs": details["inputs"],
        "outputs": result.outputs,
        "metrics": result.metrics,
        "summary": result.summary,
        "versions": package_versions(),
        "git_sha": git_sha(),
        "base_revision": models.revision_record(cfg.model) if "model" in spec.sections else None,
        "started_at": started.isoformat(),
        "wall_time_s": round(wall, 3),
    }
    if is_main_process():
        run_dir.write_manifest(spec.name, manifest)  # last: its presence means "done"
    return StageOutcome(spec.name, "ran", wall, result.summary)


def run_pipeline(cfg: Config, specs: list[StageSpec], names: list[str] | None = None,
                 force: bool = False) -> list[StageOutcome]:
    run_dir = RunDir(cfg.run_path)
    enabled = {s.name for s in specs if s.enabled(cfg)}
    selected = select_stages(specs, names)
    if names:
        off = [s.name for s in selected if s.name not in enabled]
        if off:
            raise StageError(f"stage(s) {', '.join(off)} are switched off by this config: add the section that "
                             "enables them (data, mix for train, sft, align; eval/export need a model stage)")
    outcomes = []
    for spec in selected:
        if spec.name not in enabled:
            outcomes.append(StageOutcome(spec.name, "off", 0.0, "not configured"))
            continue
        console.rule(f"[bold]{spec.name}[/] — {spec.help}")
        outcome = run_stage(spec, cfg, run_dir, force=force, enabled=enabled)
        if outcome.status == "skipped":
            console.print(f"  [dim]unchanged since last run; skipped[/] {outcome.summary}")
        outcomes.append(outcome)
    return outcomes
