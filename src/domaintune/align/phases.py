"""One resumable training phase of the align stage (a reward-model stage or DPO).

A phase runs an HF/trl trainer under our guards (training/hf_callbacks.py). When it finishes, its trainable
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

from domaintune.artifacts import atomic_write_json, stable_hash
from domaintune.console import console
from domaintune.training.checkpoint import load_trainable_state, trainable_state
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.hf_callbacks import GuardCallback
from domaintune.training.hf_trainer import FaultTolerance, train_guarded
from domaintune.training.resume import HFCheckpoints, choose_checkpoint, mark_finished

DONE, WEIGHTS, KEY = "done", "trainable.safetensors", "key.json"


def _warn(message: str) -> None:
    console.print(f"  [yellow]warning:[/] {message}")


class Phase:
    """setup (`begin`: resume point + callbacks) → the stage builds its trainer → `train` → keep the weights.
    `finished_model` short-circuits all of it when the phase already finished with the same key."""

    def __init__(self, phase_dir: Path, key: dict[str, Any], ft: FaultTolerance, heartbeat: Heartbeat,
                 reuse: bool = True):
        self.dir, self.key, self.ft, self.reuse = Path(phase_dir), key, ft, reuse
        self.heartbeat = heartbeat
        self.root = self.dir / "checkpoints"  # the trainer's output_dir
        self.resume_from: Path | None = None
        self.records: list[dict[str, Any]] = []
        self._guard: StepGuard | None = None
        self._callback: GuardCallback | None = None

    @property
    def name(self) -> str:
        return self.dir.name

    def finished_model(self, model_for_reuse: Callable[[], Any]):
        """The phase's trained model from an earlier attempt with the same key, or None."""
        done = self.dir / DONE
        try:
            same = json.loads((done / KEY).read_text(encoding="utf-8"))["key"] == stable_hash(self.key)
        except (OSError, ValueError, KeyError):
            return None
        weights = done / WEIGHTS
        if not (self.reuse and same and weights.is_file()):
            return None
        console.print(f"  {self.name}: finished in an earlier attempt; weights reloaded from {done}")
        model = model_for_reuse()
        load_trainable_state(model, weights, str(weights))
        return model

    def begin(self) -> list:
        """Choose the checkpoint to resume from; returns the callbacks the phase's trainer must get."""
        self._guard = StepGuard(self.ft.nan_policy, self.ft.max_bad_steps, None, self.dir / "diagnostics",
                                section=self.ft.section,
                                lr_key=f"{self.ft.section}.dpo.lr or {self.ft.section}.reward.lr")
        self._callback = GuardCallback(self.name, self.dir, self._guard, PreemptionFlag(), self.heartbeat)
        self.resume_from = choose_checkpoint(HFCheckpoints(self.root), self.key, self.ft.resume_policy, _warn)
        if self.resume_from is not None:
            console.print(f"  {self.name}: resuming from {self.resume_from.name}")
        return [self._callback]

    def train(self, trainer):
        """Train (or resume) the trainer built with `begin()`'s callbacks; returns the trained model."""
        train_guarded(trainer, self._callback, self.resume_from, self._callback.preempt)
        mark_finished(self.root, self.key)
        self.records = self._callback.records
        if self._guard.skipped:
            console.print(f"  [yellow]{self.name}: {self._guard.skipped} non-finite step(s) skipped[/]")
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
