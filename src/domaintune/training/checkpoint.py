"""Atomic, verifiable checkpoints of our own training loop (which one to resume: training/resume.py).

A checkpoint folder `step-00000042/` holds the trainable weights (safetensors), optimizer and
scheduler state, RNG states and `meta.json` (step, resume key, sha256 of every file). It is
written under a hidden staging name and renamed only when complete, so a crash mid-save leaves
nothing that looks like a checkpoint; a later corruption (truncated file) is caught by the
checksums. Tensors-only files are loaded with `torch.load(weights_only=True)`: a checkpoint
carrying an arbitrary pickled object is refused instead of executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from domaintune.errors import CheckpointError

NAME = re.compile(r"^step-(\d{8})$")
WEIGHTS, OPTIMIZER, SCHEDULER, RNG, META = ("trainable.safetensors", "optimizer.pt", "scheduler.pt",
                                            "rng.pt", "meta.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain containers, so they load with weights_only=True."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "numpy": [kind, torch.from_numpy(keys.astype(np.int64)),
                                                              pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, meta: dict[str, Any],
                    keep_last: int) -> Path:
    """Write step `step` atomically, then drop all but the newest `keep_last` checkpoints."""
    final = root / f"step-{step:08d}"
    staging = root / f".step-{step:08d}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(trainable_state(model), str(staging / WEIGHTS))
    torch.save(optimizer.state_dict(), staging / OPTIMIZER)
    torch.save(scheduler.state_dict(), staging / SCHEDULER)
    torch.save(rng_state(), staging / RNG)
    files = {name: _sha256(staging / name) for name in (WEIGHTS, OPTIMIZER, SCHEDULER, RNG)}
    (staging / META).write_text(json.dumps({**meta, "step": step, "files": files}, indent=2) + "\n")
    for f in staging.iterdir():
        _fsync(f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _fsync(root)
    prune(root, keep_last)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders (complete by name), oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and NAME.match(p.name)), key=lambda p: p.name)


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints plus the one with the best held-out loss."""
    ckpts = list_checkpoints(root)
    scored = [(read_meta(p).get("val_loss"), p) for p in ckpts if verify(p) is None]
    scored = [(loss, p) for loss, p in scored if loss is not None]
    best = min(scored, key=lambda t: t[0])[1] if scored else None
    for old in ckpts[:-keep_last]:
        if old != best:
            shutil.rmtree(old, ignore_errors=True)


def verify(path: Path) -> str | None:
    """None if the checkpoint is intact, else what is wrong with it."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable {META}: {exc}"
    for name, digest in meta.get("files", {}).items():
        if not (path / name).is_file():
            return f"missing {name}"
        if _sha256(path / name) != digest:
            return f"{name} does not match its checksum (truncated or modified)"
    return None


def newest_intact(root: Path, before_step: int) -> Path | None:
    """The newest intact checkpoint strictly before `before_step` (a spike rollback's target)."""
    for path in reversed(list_checkpoints(root)):
        if step_from_name(path) < before_step and verify(path) is None:
            return path
    return None


def step_from_name(path: Path) -> int:
    """The step a checkpoint folder holds, from its name (`step-00000042`), without opening it."""
    return int(NAME.match(path.name).group(1))


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META).read_text(encoding="utf-8"))


def _safe_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError (or others) for disallowed globals
        raise CheckpointError(f"refusing to load {path}: it is not plain tensor state ({exc}). "
                              f"Checkpoints never need arbitrary pickled objects.") from exc


def load_trainable_state(model, weights: Path, what: str) -> None:
    """Copy a `trainable_state` file into `model`'s parameters (`what` names it in the error)."""
    state = load_file(str(weights))
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise CheckpointError(f"{what} has weights this model lacks: {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states; returns the checkpoint's meta."""
    load_trainable_state(model, path / WEIGHTS, f"checkpoint {path}")
    optimizer.load_state_dict(_safe_load(path / OPTIMIZER))
    scheduler.load_state_dict(_safe_load(path / SCHEDULER))
    set_rng_state(_safe_load(path / RNG))
    return read_meta(path)
