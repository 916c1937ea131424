"""Step guards: non-finite loss/gradients, loss spikes, and preemption signals.

Decisions use values that are identical on every rank (reduced loss sums, the all-reduced
gradient norm), so all ranks skip or stop together.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.console import console
from domaintune.errors import TrainingAborted


@dataclass
class StepGuard:
    nan_policy: str  # "skip" | "stop"
    max_bad_steps: int
    spike_factor: float | None
    diagnostics_dir: Path
    rollback: bool = False  # on a spike: restore the last checkpoint and skip the batches since it
    max_rollbacks: int = 3
    section: str = "train"  # the config section in use, named in messages (train, sft, align)
    lr_key: str | None = None  # the learning-rate key to suggest lowering (default: <section>.optim.lr)
    skipped: int = 0
    rollbacks: int = 0
    consecutive_bad: int = 0
    spikes: int = 0
    _avg: float | None = None
    _seen: int = 0

    def finite(self, step: int, loss: float, grad_norm: float, rows: list[int], judge_grads: bool = True) -> bool:
        """True if the step may update the weights; raises TrainingAborted when it must stop.

        `judge_grads=False` under fp16: an overflowing gradient is the grad scaler's business (it
        skips that update and lowers its scale), so only a non-finite loss is a bad step."""
        if math.isfinite(loss) and (math.isfinite(grad_norm) or not judge_grads):
            self.consecutive_bad = 0
            return True
        self.consecutive_bad += 1
        info = {"step": step, "loss": loss, "grad_norm": grad_norm, "rows": rows}
        if self.nan_policy == "stop" or self.consecutive_bad >= self.max_bad_steps:
            path = self._write_diagnostics(info)
            why = (f"{self.section}.guards.nan_policy is 'stop'" if self.nan_policy == "stop"
                   else f"{self.consecutive_bad} consecutive bad steps ({self.section}.guards.max_bad_steps)")
            raise TrainingAborted(f"non-finite loss or gradient at step {step} ({why}); diagnostics in {path}. "
                                  f"The last good checkpoint is intact: lower "
                                  f"{self.lr_key or self.section + '.optim.lr'} or inspect those rows, "
                                  f"then re-run to resume.")
        self.skipped += 1
        return False

    def spike(self, loss: float) -> bool:
        """True if `loss` exceeds spike_factor x the running average (after a short warm-up)."""
        is_spike = (self.spike_factor is not None and self._avg is not None and self._seen >= 5
                    and loss > self.spike_factor * self._avg)
        if is_spike:
            self.spikes += 1
        else:  # spikes do not pollute the average they are judged against
            self._avg = loss if self._avg is None else 0.9 * self._avg + 0.1 * loss
            self._seen += 1
        return is_spike

    def may_roll_back(self) -> bool:
        return self.rollback and self.rollbacks < self.max_rollbacks

    def rolled_back(self, step: int, restored: int) -> None:
        self.rollbacks += 1
        path = self._write_diagnostics({"step": step, "event": "loss spike: rolled back",
                                        "restored_step": restored, "running_average": self._avg}, "spike_rollback")
        console.print(f"  [yellow]warning:[/] loss spike at step {step}: rolled back to the checkpoint of step "
                      f"{restored} and skipped the batches in between ({path.name})")

    def _write_diagnostics(self, info: dict[str, Any], kind: str = "bad_step") -> Path:
        self.diagnostics_dir.mkdir(parents=True, exist_ok=True)
        path = self.diagnostics_dir / f"{kind}_{info['step']:08d}.json"
        path.write_text(json.dumps(info, indent=2, default=str) + "\n")
        return path


@dataclass
class PreemptionFlag:
    """First SIGTERM/SIGINT: finish the current step, checkpoint, exit. Second: exit at once."""

    requested: bool = False
    signum: int | None = None
    _previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> PreemptionFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            # only the main thread may install handlers (not e.g. a test runner's worker thread)
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if self.requested:
            os._exit(128 + signum)
        self.requested, self.signum = True, signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
