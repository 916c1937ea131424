"""The heartbeat of a training stage: "a step finished, at this time", for the `--supervise` watchdog.

One file per stage (`RunDir.heartbeat_path(stage)`), whatever the stage's phases or attempts
(SFT-auto attempts, align's reward-model and DPO phases name themselves in `phase`), so the
supervisor never has to guess how deep a stage keeps its work. Only the main process beats.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from domaintune.artifacts import atomic_write_json


class Heartbeat:
    def __init__(self, path: Path, stage: str, phase: str | None = None, main: bool = True):
        self.path, self.stage, self.phase, self.main = Path(path), stage, phase, main

    def for_phase(self, phase: str) -> Heartbeat:
        """The same stage's heartbeat, naming a phase (an SFT-auto attempt, an align phase)."""
        return Heartbeat(self.path, self.stage, phase, self.main)

    def beat(self, step: int) -> None:
        if self.main:
            atomic_write_json(self.path, {"stage": self.stage, "phase": self.phase, "step": step,
                                          "time": time.time(), "pid": os.getpid()})
