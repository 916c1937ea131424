"""One resumable training phase of the align stage (a reward-model stage or DPO), and the filter report.

A phase runs an HF/trl trainer under trainer_bridge's guards. When it finishes, its trainable
weights are kept in `<phase>/done/` with the key of the settings that produced them, so a re-run
of an interrupted stage reloads finished phases instead of training them again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from domaintune.align.confidence import FilterResult
from domaintune.artifacts import atomic_write_json, atomic_write_text, stable_hash
from domaintune.console import console
from domaintune.training.checkpoint import load_trainable_state, trainable_state
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.trainer_bridge import (
    FaultTolerance,
    GuardCallback,
    choose_hf_checkpoint,
    mark_finished,
    train_guarded,
)

DONE, WEIGHTS, KEY = "done", "trainable.safetensors", "key.json"


def _warn(message: str) -> None:
    console.print(f"  [yellow]warning:[/] {message}")


class Phase:
    def __init__(self, phase_dir: Path, key: dict[str, Any], ft: FaultTolerance, reuse: bool = True):
        self.dir, self.key, self.ft, self.reuse = Path(phase_dir), key, ft, reuse
        self.resume_from: Path | None = None
        self.records: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return self.dir.name

    def _finished_weights(self) -> Path | None:
        done = self.dir / DONE
        try:
            same = json.loads((done / KEY).read_text(encoding="utf-8"))["key"] == stable_hash(self.key)
        except (OSError, ValueError, KeyError):
            return None
        return done / WEIGHTS if same and (done / WEIGHTS).is_file() else None

    def run(self, make_trainer: Callable[[Path, list], Any], model_for_reuse: Callable[[], Any] | None = None):
        """Train (or resume) and return the trained model; a finished phase is reloaded instead."""
        weights = self._finished_weights() if self.reuse and model_for_reuse else None
        if weights is not None:
            console.print(f"  {self.name}: finished in an earlier attempt; weights reloaded from {weights.parent}")
            model = model_for_reuse()
            load_trainable_state(model, weights, str(weights))
            return model
        guard = StepGuard(self.ft.nan_policy, self.ft.max_bad_steps, None, self.dir / "diagnostics",
                          section=self.ft.section, lr_key=f"{self.ft.section}.dpo.lr or {self.ft.section}.reward.lr")
        preempt = PreemptionFlag()
        callback = GuardCallback(self.name, self.dir, guard, preempt)
        root = self.dir / "checkpoints"
        self.resume_from = choose_hf_checkpoint(root, self.key, self.ft, _warn)
        if self.resume_from is not None:
            console.print(f"  {self.name}: resuming from {self.resume_from.name}")
        trainer = make_trainer(root, [callback])
        train_guarded(trainer, callback, self.resume_from, preempt)
        mark_finished(root)
        self.records = callback.records
        if guard.skipped:
            console.print(f"  [yellow]{self.name}: {guard.skipped} non-finite step(s) skipped[/]")
        if self.reuse:
            self._keep(trainer.model)
        return trainer.model

    def _keep(self, model) -> None:
        staging = self.dir / f".{DONE}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_file(trainable_state(model), str(staging / WEIGHTS))
        atomic_write_json(staging / KEY, {"key": stable_hash(self.key)})
        shutil.rmtree(self.dir / DONE, ignore_errors=True)
        staging.rename(self.dir / DONE)


def write_filter_report(path: Path, pairs, report: FilterResult) -> Path:
    """One line per scored pair: where it came from, the decision and the margin interval."""
    lines = []
    for p, decision, mean, lo, hi in zip(pairs, report.decisions, report.mean_margin, report.low, report.high):
        question = next((m["content"] for m in reversed(p.prompt) if m["role"] == "user"), "")
        lines.append(json.dumps({"source": p.source, "line": p.line, "decision": decision,
                                 "margin": round(mean, 5), "interval": [round(lo, 5), round(hi, 5)],
                                 "prompt": question[:120]}, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path
