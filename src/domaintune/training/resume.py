"""Which checkpoint a training run continues from, and whether it is allowed to: ONE policy for
our own loop's checkpoints (`step-00000042/`) and for HF/trl trainers' (`checkpoint-42/`).

* A run resumes only what an *interrupted* attempt left behind: when training finishes, a
  `finished.json` marker is written, and the next (changed or forced) run starts fresh.
* `resume: never` starts fresh too, but moves the old checkpoints aside (`checkpoints.prev-<time>/`)
  and says where: an interrupted run's checkpoints are never deleted silently.
* Resuming across a change of what determines the result (seed, schedule, data, base model,
  method) is refused with the list of differences, unless `allow_config_change` is set; then the
  differences are logged.
* A damaged newest checkpoint is skipped with a warning; a checkpoint named explicitly must be intact.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from domaintune.artifacts import atomic_write_json, stable_hash
from domaintune.errors import CheckpointError
from domaintune.training import checkpoint
from domaintune.training.hf_callbacks import list_hf_checkpoints, verify_hf_checkpoint

FINISHED = "finished.json"
SETTINGS = "resume_key.json"  # HF checkpoints: the settings they were saved under (ours keep them in meta.json)

Warn = Callable[[str], None]


@dataclass(frozen=True)
class ResumePolicy:
    resume: str = "auto"  # "auto" | "never" | a checkpoint folder
    allow_config_change: bool = False
    section: str = "train"  # the config section holding these keys, named in messages


class Checkpoints(Protocol):
    """A folder of checkpoints of one kind: how to list, verify and read their settings."""

    root: Path

    def list(self) -> list[Path]: ...
    def verify(self, path: Path) -> str | None: ...
    def settings(self, path: Path) -> dict[str, Any] | None: ...
    def accepts(self, path: Path) -> bool: ...
    def record(self, current: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class OwnCheckpoints:
    """Our loop's checkpoints: each one stores the settings it was saved under in its meta.json."""

    root: Path

    def list(self) -> list[Path]:
        return checkpoint.list_checkpoints(self.root)

    def verify(self, path: Path) -> str | None:
        return checkpoint.verify(path)

    def settings(self, path: Path) -> dict[str, Any] | None:
        return checkpoint.read_meta(path).get("resume_config")

    def accepts(self, path: Path) -> bool:
        return True  # e.g. a checkpoint copied from another run

    def record(self, current: dict[str, Any]) -> None:
        pass  # written into every checkpoint's meta by the loop


@dataclass(frozen=True)
class HFCheckpoints:
    """An HF trainer's checkpoints: their settings are recorded once, next to them."""

    root: Path

    def list(self) -> list[Path]:
        return list_hf_checkpoints(self.root)

    def verify(self, path: Path) -> str | None:
        return verify_hf_checkpoint(path)

    def settings(self, path: Path) -> dict[str, Any] | None:
        key_file = self.root / SETTINGS
        if not key_file.is_file():
            return None
        recorded = read_json(key_file, f"delete {key_file} to resume without comparing settings")
        if not isinstance(recorded, dict) or not isinstance(recorded.get("settings"), dict):
            raise CheckpointError(f"{key_file} does not hold the settings of the checkpoints next to it; delete it "
                                  f"to resume without comparing settings")
        return recorded["settings"]

    def accepts(self, path: Path) -> bool:
        """A checkpoint named in `resume` is used by the phase it belongs to; the others resume automatically."""
        return path.resolve().parent == self.root.resolve()

    def record(self, current: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / SETTINGS, {"settings": current})


def read_json(path: Path, fix: str) -> Any:
    """A JSON file the run wrote itself; damage (a full disk, an edit) is one clear CheckpointError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); {fix}") from exc


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def set_aside(root: Path) -> Path:
    """Move a checkpoint folder out of the way (never delete what an interrupted run left)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = root.with_name(f"{root.name}.prev-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = root.with_name(f"{root.name}.prev-{stamp}-{n}")
    root.rename(target)
    return target


def newest_intact(store: Checkpoints, warn: Warn) -> Path | None:
    """The newest intact checkpoint; broken newer ones are skipped with a warning."""
    for path in reversed(store.list()):
        problem = store.verify(path)
        if problem is None:
            return path
        warn(f"checkpoint {path.name} is unusable ({problem}); falling back to an older one")
    return None


def _explicit(store: Checkpoints, policy: ResumePolicy) -> Path | None:
    """A checkpoint named by the user must be intact: no silent fallback."""
    if policy.resume in ("auto", "never") or not store.accepts(Path(policy.resume)):
        return None
    path = Path(policy.resume)
    if not path.is_dir():
        raise CheckpointError(f"{policy.section}.checkpoint.resume: checkpoint {path} does not exist")
    problem = store.verify(path)
    if problem:
        raise CheckpointError(f"{policy.section}.checkpoint.resume: checkpoint {path} is unusable: {problem}")
    return path


def _start_fresh(store: Checkpoints, policy: ResumePolicy, warn: Warn) -> None:
    root = store.root
    if (root / FINISHED).is_file():
        shutil.rmtree(root, ignore_errors=True)  # a finished run's checkpoints are stale
    elif policy.resume == "never" and root.is_dir() and any(root.iterdir()):
        moved = set_aside(root)
        warn(f"{policy.section}.checkpoint.resume=never: starting over; the existing checkpoints were moved to {moved} "
             f"(delete that folder when you no longer need them)")


def choose_checkpoint(store: Checkpoints, current: dict[str, Any], policy: ResumePolicy, warn: Warn) -> Path | None:
    """The checkpoint to resume from (None: start fresh); `current` holds the settings that decide the result."""
    if (store.root / FINISHED).is_file() or policy.resume == "never":
        _start_fresh(store, policy, warn)
        path = None
    else:
        path = _explicit(store, policy) or newest_intact(store, warn)
    if path is not None:
        recorded = store.settings(path)  # None: saved without settings to compare (e.g. by hand)
        diff = config_diff(recorded, current) if recorded is not None else []
        if diff and not policy.allow_config_change:
            raise CheckpointError(
                f"refusing to resume from {path}: the run's settings changed since it was saved:\n    "
                + "\n    ".join(diff)
                + f"\n  Set {policy.section}.checkpoint.allow_config_change=true to resume anyway, or "
                  f"{policy.section}.checkpoint.resume=never to start over (the checkpoints are kept aside).")
        if diff:
            warn("resuming despite changed settings: " + "; ".join(diff))
    store.record(current)
    return path


def mark_finished(root: Path, current: dict[str, Any]) -> None:
    """Training in `root` completed: its checkpoints are not resumed by the next run."""
    atomic_write_json(root / FINISHED, {"resume_key": stable_hash(current), "finished_at": time.time()})
