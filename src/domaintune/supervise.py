"""`--supervise`: run a domaintune command as a child process and restart it when it crashes.

The child resumes by itself (``resume: auto`` picks the newest intact checkpoint), so the
supervisor only decides *whether* and *when* to start it again, kills it when it hangs (no step
finished for ``hang_timeout_s``, read from the heartbeat every training stage writes after every
step, `RunDir.heartbeat_path(stage)`), and records every crash in the restart log of the stage that
was training (`RunDir.restarts(stage)`, e.g. ``<run>/sft/restarts.json``) for that stage's manifest.

Not retried: exit code 2 (user/config error), 3 (evaluation gate failed) and 4 (training stopped on
purpose by its NaN/bad-step policy): restarting reproduces them. Everything else — other exit codes,
death by a signal (OOM killer, SIGKILL), a hang — is retried with exponential backoff.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domaintune.artifacts import RunDir
from domaintune.config import Config
from domaintune.console import console

SETTINGS = "runtime.supervise"  # the config section holding max_restarts, restart_backoff_s, hang_timeout_s
NO_RETRY = {2: "configuration or input error", 3: "evaluation gate failed", 4: "training stopped by its guard"}
POLL_S = 1.0  # heartbeat checks; the watchdog needs no finer resolution than a second
KILL_GRACE_S = 10.0


def backoff_delay(restart_index: int, base_s: float) -> float:
    """Wait before restart number `restart_index` (0-based): base, 2x base, 4x base, ..."""
    return base_s * 2 ** restart_index


def describe_exit(returncode: int, hung: bool = False) -> str:
    if hung:
        return "hang"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def beat_since(run_dir: RunDir, since: float) -> tuple[str, dict[str, Any]] | None:
    """(stage, heartbeat) of the newest heartbeat written since `since` by any stage of the run
    (an older one belongs to a dead child), or None."""
    beats = [(stage, b) for stage, b in run_dir.heartbeats().items() if float(b["time"]) >= since]
    return max(beats, key=lambda sb: float(sb[1]["time"])) if beats else None


def restart_record(attempt: int, cause: str, started_at: float, crashed_at: float,
                   beat: dict[str, Any] | None) -> dict[str, Any]:
    """One crash. `time_lost_s` is the work since the attempt's last finished step (or since it started)."""
    last_time = float(beat["time"]) if beat else started_at
    return {"attempt": attempt, "cause": cause, "last_step": beat["step"] if beat else None,
            "crashed_at": crashed_at, "resumed_at": None, "time_lost_s": round(crashed_at - last_time, 3),
            "recovery_s": None}


@dataclass
class _Crash:
    stage: str | None  # whose restart log records it (None: no training stage to blame)
    record: dict[str, Any]


@dataclass
class _Attempt:
    proc: subprocess.Popen
    started_at: float
    hung: bool = False
    pending_recovery: _Crash | None = None  # the previous crash, waiting for our first step


class Supervisor:
    def __init__(self, argv: list[str], cfg: Config, run_path: Path, kill_grace_s: float = KILL_GRACE_S,
                 poll_s: float = POLL_S):
        self.argv, self.t = list(argv), cfg.runtime.supervise
        self.run_dir = RunDir(run_path)
        self.stages, self.final_stage = cfg.model_stages(), cfg.final_model_stage
        self.kill_grace_s, self.poll_s = kill_grace_s, poll_s
        self.series = uuid.uuid4().hex[:12]  # this session's restarts, unless a stage's log continues one
        self.logs: dict[str, tuple[str, list[dict[str, Any]]]] = {}  # stage -> (series, records)
        self.crashes: list[_Crash] = []
        self._stopping = False
        self._child: subprocess.Popen | None = None

    # ------------------------------------------------------------------ public
    def run(self) -> int:
        previous = self._install_signal_handlers()
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ------------------------------------------------------------------ attempts
    def _loop(self) -> int:
        restarts, pending = 0, None
        while True:
            attempt = self._start(pending)
            code = self._wait(attempt)
            crashed_at = time.time()
            if code != 0:
                self._signal_group(attempt.proc, signal.SIGKILL)  # orphaned workers of a dead child
            if code == 0 or self._stopping:
                return code if code >= 0 else 1
            if code in NO_RETRY:
                console.print(f"[bold red]supervise:[/] child exited with code {code} ({NO_RETRY[code]}); "
                              f"not restarting")
                return code
            crash = self._record(attempt, code, crashed_at)
            if restarts >= self.t.max_restarts:
                self._give_up(crash.record)
                return code if code > 0 else 1
            delay = backoff_delay(restarts, self.t.restart_backoff_s)
            r = crash.record
            step = f"after step {r['last_step']}" if r["last_step"] is not None else "before any step"
            console.print(f"[bold yellow]supervise:[/] attempt {r['attempt']} crashed ({r['cause']}) "
                          f"{step}{f' of {crash.stage}' if crash.stage else ''}; restart {restarts + 1}/"
                          f"{self.t.max_restarts} in {delay:g}s (resumes from the newest checkpoint)")
            self._sleep(delay)
            if self._stopping:
                return code if code > 0 else 1
            restarts, pending = restarts + 1, crash

    def _record(self, attempt: _Attempt, code: int, crashed_at: float) -> _Crash:
        """Record the crash in the restart log of the stage that was training."""
        found = beat_since(self.run_dir, attempt.started_at)
        stage = found[0] if found else self._blamed_stage()
        history = self._history(stage)
        record = restart_record(len(history) + 1, describe_exit(code, attempt.hung), attempt.started_at,
                                crashed_at, found[1] if found else None)
        history.append(record)
        crash = _Crash(stage, record)
        self.crashes.append(crash)
        self._save(stage)
        return crash

    def _blamed_stage(self) -> str | None:
        """No step finished in this attempt: the stage of the previous crash, else the first model
        stage that has not finished (what the command was about to train)."""
        if self.crashes:
            return self.crashes[-1].stage
        pending = [s for s in self.stages if self.run_dir.manifest(s) is None]
        return (pending or self.stages or [None])[0]

    def _history(self, stage: str | None) -> list[dict[str, Any]]:
        if stage is None:
            return [c.record for c in self.crashes]
        if stage not in self.logs:  # continue the stage's unfinished series, else start this session's
            series, records = self.run_dir.restarts(stage).open_series()
            self.logs[stage] = (series or self.series, records)
        return self.logs[stage][1]

    def _save(self, stage: str | None) -> None:
        if stage is not None:
            self.run_dir.restarts(stage).write(*self.logs[stage])

    def _start(self, pending: _Crash | None) -> _Attempt:
        started_at = time.time()
        # own process group: killing it kills dataloader workers and accelerate ranks too
        proc = subprocess.Popen(self.argv, start_new_session=True)
        self._child = proc
        if pending is not None:  # resumed_pid: lets the stage tell these records from stale ones
            pending.record |= {"resumed_at": started_at, "resumed_pid": proc.pid}
            self._save(pending.stage)
        return _Attempt(proc, started_at, pending_recovery=pending)

    def _wait(self, attempt: _Attempt) -> int:
        timeout = self.t.hang_timeout_s
        while True:
            try:
                # poll fast until the first step after a crash: recovery_s is measured to that step
                code = attempt.proc.wait(timeout=0.1 if attempt.pending_recovery else self.poll_s)
                self._note_recovery(attempt, beat_since(self.run_dir, attempt.started_at))
                return code
            except subprocess.TimeoutExpired:
                pass
            found = beat_since(self.run_dir, attempt.started_at)
            self._note_recovery(attempt, found)
            if timeout and not self._stopping and not self._training_finished(attempt.started_at):
                last = float(found[1]["time"]) if found else attempt.started_at
                if time.time() - last > timeout:
                    console.print(f"[bold yellow]supervise:[/] no training step finished for {timeout:g}s "
                                  f"({SETTINGS}.hang_timeout_s); killing the child")
                    attempt.hung = True
                    return self._kill(attempt.proc)

    def _note_recovery(self, attempt: _Attempt, found: tuple[str, dict[str, Any]] | None) -> None:
        if found is None or attempt.pending_recovery is None:
            return
        crash, attempt.pending_recovery = attempt.pending_recovery, None
        beat = found[1]
        crash.record["recovery_s"] = round(float(beat["time"]) - crash.record["crashed_at"], 3)
        self._save(crash.stage)
        console.print(f"[green]supervise:[/] training resumed ({found[0]} step {beat['step']}) "
                      f"{crash.record['recovery_s']:.1f}s after the crash")

    def _training_finished(self, since: float) -> bool:
        """After training (e.g. `run` going on to eval/export) there are no heartbeats to expect:
        the last model stage finished its training (its checkpoints are marked finished) or wrote
        its manifest."""
        if self.final_stage is None:
            return False
        marks = (self.run_dir.root / self.final_stage / "checkpoints" / "finished.json",
                 self.run_dir.manifest_path(self.final_stage))
        return any(m.is_file() and m.stat().st_mtime >= since for m in marks)

    def _kill(self, proc: subprocess.Popen) -> int:
        self._signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(proc, signal.SIGKILL)
            return proc.wait()

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    # ------------------------------------------------------------------ signals, records
    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM/SIGINT to the supervisor: pass SIGTERM on (the child checkpoints and exits), don't restart."""
        def forward(signum, _frame):
            self._stopping = True
            if self._child is not None and self._child.poll() is None:
                self._signal_group(self._child, signal.SIGTERM)

        previous = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return previous

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _give_up(self, last: dict[str, Any]) -> None:
        from rich.table import Table

        console.print(f"[bold red]supervise:[/] giving up after {self.t.max_restarts} restart(s) "
                      f"({SETTINGS}.max_restarts); last cause: {last['cause']}")
        logs = sorted({str(self.run_dir.restarts(c.stage).path) for c in self.crashes if c.stage})
        table = Table(title=f"restarts — {', '.join(logs) or 'not recorded (no training stage)'}",
                      title_justify="left")
        for col in ("stage", "attempt", "cause", "last step", "time lost", "recovery"):
            table.add_column(col)
        for c in self.crashes:
            r = c.record
            recovery = f"{r['recovery_s']:.1f}s" if r["recovery_s"] is not None else "-"
            step = str(r["last_step"]) if r["last_step"] is not None else "-"
            table.add_row(c.stage or "-", str(r["attempt"]), r["cause"], step, f"{r['time_lost_s']:.1f}s", recovery)
        console.print(table)


def supervise(argv: list[str], cfg: Config, run_path: Path, launcher: list[str] | None = None) -> int:
    """Run `argv` (a domaintune command) as a child process, restarting it after crashes and hangs
    per `cfg.runtime.supervise` (max_restarts, restart_backoff_s, hang_timeout_s).
    `launcher` is put in front of `argv` (e.g. a fault-injecting wrapper in tests). Returns 0 once a child succeeds,
    otherwise the last child's exit code (1 if it died by a signal)."""
    return Supervisor([*(launcher or []), *argv], cfg, run_path).run()
