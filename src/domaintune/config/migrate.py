"""Renamed and moved keys (OLMo's `update_legacy_settings`): applied to the raw YAML data before
validation, each with a deprecation warning naming the old and the new key, so every config
that validated before a rename still validates."""

from __future__ import annotations

import copy
import warnings
from typing import Any

from domaintune.config.base import ConfigDeprecation

# The flat training keys of `train`/`sft` and the shared block each now lives in.
_BLOCKS = {
    "optim": ("lr", "weight_decay", "warmup_ratio", "scheduler", "max_grad_norm"),
    "batch": ("batch_size", "batch_tokens", "grad_accum", "epochs", "max_steps"),
    "checkpoint": ("save_every", "keep_last", "resume", "allow_config_change"),
    "guards": ("nan_policy", "max_bad_steps", "spike_factor", "spike_policy", "max_rollbacks"),
    "logging": ("log_every", "eval_every", "report_to"),
}
# old dotted key -> new dotted key
MOVES: dict[str, str] = {f"{section}.{key}": f"{section}.{block}.{key}"
                         for section in ("train", "sft") for block, keys in _BLOCKS.items() for key in keys}
MOVES |= {f"train.{k}": f"runtime.supervise.{k}" for k in ("max_restarts", "restart_backoff_s", "hang_timeout_s")}
# `train`'s fault-tolerance keys used to configure the align stage too: they now live in align's own
# blocks. Without a mix section they configured only align (CPT did not run), so they move there.
ALIGN_SHARED = {"train.save_every": "align.checkpoint.save_every", "train.keep_last": "align.checkpoint.keep_last",
                "train.resume": "align.checkpoint.resume",
                "train.allow_config_change": "align.checkpoint.allow_config_change",
                "train.nan_policy": "align.guards.nan_policy", "train.max_bad_steps": "align.guards.max_bad_steps"}


def _get(raw: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _pop(raw: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node.pop(leaf)


def _set(raw: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def targets(old: str, raw: dict) -> list[str]:
    """The new key(s) an old dotted key maps to in this config ([] when it is not an old key)."""
    out = []
    if old in ALIGN_SHARED and isinstance(raw.get("align"), dict):
        out.append(ALIGN_SHARED[old])
        if raw.get("mix") is None:
            return out
    if old in MOVES:
        out.append(MOVES[old])
    return out


def migrate(raw: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A copy of `raw` with every old key moved to its new place, and the (old, new) moves made.
    Raises ValueError when a key is set under both its old and its new name."""
    raw = copy.deepcopy(raw)
    moves, problems = [], []
    for old in [*ALIGN_SHARED, *(k for k in MOVES if k not in ALIGN_SHARED)]:
        found, value = _get(raw, old)
        if not found:
            continue
        for new in targets(old, raw):
            if _get(raw, new)[0]:
                problems.append(f"{old} and {new} are both set; keep {new} ({old} is its old name)")
                continue
            _set(raw, new, value)
            moves.append((old, new))
        _pop(raw, old)
    if problems:
        raise ValueError("; ".join(problems))
    for old, new in moves:
        warnings.warn(f"{old} is now {new}: the old key still works, but update the config", ConfigDeprecation,
                      stacklevel=2)
    return raw, moves


def migrate_override(key: str, raw: dict[str, Any]) -> list[str]:
    """The key(s) a `key.path=value` override sets, with a deprecation warning for an old key."""
    new = targets(key, raw)
    for target in new:
        warnings.warn(f"{key} is now {target}: the old key still works, but update the command",
                      ConfigDeprecation, stacklevel=2)
    return new or [key]
