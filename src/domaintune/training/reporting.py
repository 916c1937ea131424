"""What a training run shows and records each step: progress bar, console lines, metrics.jsonl,
the configured trackers and the stage's heartbeat. Only the main process reports; other ranks stay
silent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domaintune.console import progress
from domaintune.trackers import TrackerGroup, build_trackers
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.metrics_log import MetricsLog


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


@dataclass(frozen=True)
class ReportSettings:
    report_to: list[str]
    run_name: str
    config: dict[str, Any]  # logged to the trackers once
    log_every: int
    section: str = "train"  # the config section of the training settings, named in messages


class StepReporter:
    def __init__(self, out_dir: Path, r: ReportSettings, heartbeat: Heartbeat, total_steps: int,
                 streams: tuple[str, ...], resume_step: int = 0):
        self.main, self.log_every, self.streams, self.section = heartbeat.main, r.log_every, streams, r.section
        self._window: list[dict[str, Any]] = []
        self._log = MetricsLog(out_dir / "metrics.jsonl", resume_step) if self.main else None
        self._heartbeat = heartbeat
        self.records: list[dict[str, Any]] = list(self._log.records) if self._log else []
        self.rollbacks: list[dict[str, Any]] = []  # spike rollbacks: {step, rolled_back_to, train/loss}
        key = f"{r.section}.logging.report_to"
        self._trackers = TrackerGroup(build_trackers(r.report_to, out_dir, r.run_name, key=key) if self.main else [])
        self._trackers.log_config(r.config)
        self._bar = progress(disable=not self.main)
        self._task = self._bar.add_task(heartbeat.phase or heartbeat.stage, total=total_steps,
                                        completed=resume_step, info="")
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
        self._heartbeat.beat(rec["step"])  # the supervisor's hang watchdog reads this
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
        self._heartbeat.beat(restored)
        self._log.rewind(restored)
        self._bar.update(self._task, completed=restored)
