"""The `runtime` section: where and how the run executes. Nothing here changes a result."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from domaintune.config.base import Section


class SuperviseConfig(Section):
    """`--supervise`: one policy for the whole run (it watches whichever stage is training)."""

    volatile = True

    max_restarts: int = Field(3, ge=0, description="--supervise: restarts of a crashed training process.")
    restart_backoff_s: float = Field(5.0, ge=0, description="--supervise: first wait before a restart (doubles).")
    hang_timeout_s: float | None = Field(
        None, gt=0, description="--supervise: kill and restart when no step completes for this long.")


class RuntimeConfig(Section):
    volatile = True

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when visible, else CPU.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice.")
    supervise: SuperviseConfig = Field(default_factory=SuperviseConfig,
                                       description="Restart policy of `--supervise`.")
