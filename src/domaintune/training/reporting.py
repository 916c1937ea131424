"""What a training run shows and records each step: progress bar, console lines, metrics.jsonl
and the configured trackers. Only the main process reports; other ranks stay silent."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from domaintune.artifacts import atomic_write_json
from domaintune.console import progress
from domaintune.trackers import TrackerGroup, build_trackers
from domaintune.training.metrics_log import MetricsLog

HEARTBEAT = "heartbeat.json"


def window_summary(records: list[dict], streams: tuple[str, ...]) -> str:
    """Token-weighted mean losses since the last print: one step's per-stream loss is too noisy."""
    def mean(key: str, weight_key: str) -> float | None:
        pairs = [(r[key], r[weight_key]) for r in records if key in r]
        total = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / total if total else None

    parts = [f"loss {mean('train/loss', 'targets'):.4f}"]
    for name in streams:
        value = mean(f"train/loss/{name}", f"train/targets/{name}")
        if value is not None:
            parts.append(f"{name}={value:.3f}")
    return "  ".join(parts)


class StepReporter:
    def __init__(self, out_dir: Path, report_to: list[str], run_name: str, config: dict[str, Any],
                 total_steps: int, log_every: int, streams: tuple[str, ...], main: bool = True,
                 resume_step: int = 0, section: str = "train"):
        self.main, self.log_every, self.streams = main, log_every, streams
        self.section = section  # the config section in use, named in messages
        self._window: list[dict[str, Any]] = []
        self._log = MetricsLog(out_dir / "metrics.jsonl", resume_step) if main else None
        self._heartbeat = out_dir / HEARTBEAT
        self.records: list[dict[str, Any]] = list(self._log.records) if self._log else []
        self.rollbacks: list[dict[str, Any]] = []  # spike rollbacks: {step, rolled_back_to, train/loss}
        key = f"{section}.logging.report_to"
        self._trackers = TrackerGroup(build_trackers(report_to, out_dir, run_name, key=key) if main else [])
        self._trackers.log_config(config)
        self._bar = progress(disable=not main)
        self._task = self._bar.add_task("train", total=total_steps, completed=resume_step, info="")
        self.total_steps = total_steps

    def __enter__(self) -> StepReporter:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)
        self._trackers.close()
        if self._log:
            self._log.close()

    def __call__(self, rec: dict[str, Any]) -> None:
        if "rolled_back_to" in rec:
            self._rewind(rec)
            return
        self.records.append(rec)
        if not self.main:
            return
        # the supervisor's hang watchdog reads this: a step finished, at this time
        atomic_write_json(self._heartbeat, {"step": rec["step"], "time": time.time(), "pid": os.getpid()})
        self._log.log(rec)
        self._trackers.log(rec, rec["step"])
        self._window.append(rec)
        self._bar.update(self._task, advance=1,
                         info=f"loss {rec['train/loss']:.3f} · {rec['tokens_per_s']:.0f} tok/s")
        if rec["step"] % self.log_every == 0 or rec["step"] == self.total_steps:
            self._bar.console.print(f"  step {rec['step']:>4}  " + window_summary(self._window, self.streams))
            self._window.clear()
        if rec.get("skipped"):
            self._bar.console.print(f"  [yellow]step {rec['step']}: non-finite loss or gradient; step skipped "
                                    f"(weights unchanged)[/]")
        if rec.get("spike"):
            self._bar.console.print(f"  [yellow]step {rec['step']}: loss spike ({rec['train/loss']:.3f}, "
                                    f"above {self.section}.guards.spike_factor x the running average)[/]")
        if "val/loss" in rec:
            held = "  ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in rec.items() if k.startswith("val/loss/"))
            self._bar.console.print(f"  step {rec['step']:>4}  [cyan]held-out[/] loss {rec['val/loss']:.4f}  {held}")

    def _rewind(self, rec: dict[str, Any]) -> None:
        """A spike rollback undid the steps after `rolled_back_to`: the log and the bar forget them."""
        restored = rec["rolled_back_to"]
        self.rollbacks.append({k: rec[k] for k in ("step", "rolled_back_to", "train/loss")})
        self.records = [r for r in self.records if r["step"] <= restored]
        self._window = [r for r in self._window if r["step"] <= restored]
        if not self.main:
            return
        atomic_write_json(self._heartbeat, {"step": restored, "time": time.time(), "pid": os.getpid()})
        self._log.rewind(restored)
        self._bar.update(self._task, completed=restored)
