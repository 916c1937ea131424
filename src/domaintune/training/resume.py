"""Which checkpoint a training run continues from, and whether it is allowed to.

A run resumes only what an *interrupted* attempt left behind: when training finishes, a
`finished.json` marker is written, and the next (changed or forced) run starts fresh. Resuming
across a change of what determines the result (seed, schedule, data, base model, method) is
refused unless `checkpoint.allow_config_change` is set, and then the differences are logged.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domaintune.artifacts import atomic_write_json, stable_hash
from domaintune.config import Config
from domaintune.errors import CheckpointError
from domaintune.training.checkpoint import find_resume, read_meta, resolve_explicit

FINISHED = "finished.json"


def resume_config(cfg: Config, mix_fingerprint: str) -> dict[str, Any]:
    """What the run computes (the settings that cannot change a result are left out by the schema)."""
    return {"train": cfg.result_section("train"), "model": cfg.section("model"), "seed": cfg.seed,
            "data": mix_fingerprint}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def choose_checkpoint(cfg: Config, root: Path, current: dict[str, Any], warn: Callable[[str], None],
                      section: str = "train") -> Path | None:
    """`section`: the config section holding resume/allow_config_change (train, or sft)."""
    t = getattr(cfg, section).checkpoint
    if (root / FINISHED).is_file() or t.resume == "never":
        shutil.rmtree(root, ignore_errors=True)  # a finished (or disowned) run's checkpoints are stale
        return None
    explicit = t.resume != "auto"
    path = resolve_explicit(Path(t.resume), f"{section}.checkpoint.resume") if explicit else find_resume(root, warn)
    if path is None:
        return None
    diff = config_diff(read_meta(path).get("resume_config", {}), current)
    if diff and not t.allow_config_change:
        raise CheckpointError(
            f"refusing to resume from {path}: the run's settings changed since it was saved:\n    "
            + "\n    ".join(diff)
            + f"\n  Set {section}.checkpoint.allow_config_change=true to resume anyway, or "
              f"{section}.checkpoint.resume=never to start over.")
    if diff:
        warn("resuming despite changed settings: " + "; ".join(diff))
    return path


def mark_finished(root: Path, current: dict[str, Any]) -> None:
    atomic_write_json(root / FINISHED, {"resume_key": stable_hash(current)})


def mix_fingerprint(run_dir) -> str:
    return json.dumps(run_dir.require("mix", by="train")["fingerprint"])
