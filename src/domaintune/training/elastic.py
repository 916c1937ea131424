"""Restarts by torchrun (`--max-restarts N`): torchrun, not our supervisor, restarts the whole
worker group after a crash, so rank 0 of the new group records the restart in the stage's
restart log itself, and the stage's manifest lists it like a supervised one.
TORCHELASTIC_RESTART_COUNT is torchrun's protocol, not configuration."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from domaintune.artifacts import RunDir, read_heartbeat


def note_elastic_restart(run_dir: RunDir, stage: str, resumed_step: int) -> dict[str, Any] | None:
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0:
        return None
    log = run_dir.restarts(stage)
    series, history = log.open_series() if attempt > 1 else (None, [])
    now = time.time()
    beat = read_heartbeat(run_dir.heartbeat_path(stage))  # written by the previous group's last finished step
    record = {"attempt": attempt, "launcher": "torchrun", "cause": "worker group restarted by torchrun",
              "last_step": beat["step"] if beat else None, "resumed_step": resumed_step, "resumed_at": now,
              # the agent's pid: the same for every restart of this series, so the manifest knows it is current
              "resumed_pid": os.getppid(),
              "time_lost_s": round(now - float(beat["time"]), 3) if beat else None}
    log.write(series or f"torchrun-{uuid.uuid4().hex[:12]}", [*history, record])
    return record
