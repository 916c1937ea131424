"""Which checkpoint a training run continues from, and whether it is allowed to.

A run resumes only what an *interrupted* attempt left behind: when training finishes, a
`finished.json` marker is written, and the next (changed or forced) run starts fresh. Resuming
across a change of what determines the result (seed, schedule, data, base model, method) is
refused unless `train.allow_config_change` is set, and then the differences are logged.
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
# Settings that change how a run is observed or saved, not what it computes.
NOT_RESULT_AFFECTING = {"resume", "save_every", "keep_last", "allow_config_change", "log_every", "eval_every",
                        "report_to", "max_restarts", "restart_backoff_s", "hang_timeout_s", "spike_factor"}


def resume_config(cfg: Config, mix_fingerprint: str) -> dict[str, Any]:
    train = {k: v for k, v in cfg.section("train").items() if k not in NOT_RESULT_AFFECTING}
    return {"train": train, "model": cfg.section("model"), "seed": cfg.seed, "data": mix_fingerprint}


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
    t = getattr(cfg, section)
    if (root / FINISHED).is_file() or t.resume == "never":
        shutil.rmtree(root, ignore_errors=True)  # a finished (or disowned) run's checkpoints are stale
        return None
    path = find_resume(root, warn) if t.resume == "auto" else resolve_explicit(Path(t.resume))
    if path is None:
        return None
    diff = config_diff(read_meta(path).get("resume_config", {}), current)
    if diff and not t.allow_config_change:
        raise CheckpointError(
            f"refusing to resume from {path}: the run's settings changed since it was saved:\n    "
            + "\n    ".join(diff)
            + f"\n  Set {section}.allow_config_change=true to resume anyway, or {section}.resume=never to start over.")
    if diff:
        warn("resuming despite changed settings: " + "; ".join(diff))
    return path


def mark_finished(root: Path, current: dict[str, Any]) -> None:
    atomic_write_json(root / FINISHED, {"resume_key": stable_hash(current)})


def mix_fingerprint(run_dir) -> str:
    return json.dumps(run_dir.require("mix", by="train")["fingerprint"])
