"""`--supervise`: run a domaintune command as a child process and restart it when it crashes.

The child resumes by itself (``train.resume: auto`` picks the newest intact checkpoint), so the
supervisor only decides *whether* and *when* to start it again, kills it when it hangs (no step
finished for ``runtime.supervise.hang_timeout_s``, read from the heartbeat the training loop writes after every
step), and records every crash in ``<run>/train/restarts.json`` for the train manifest.

Not retried: exit code 2 (user/config error), 3 (evaluation gate failed) and 4 (training stopped on
purpose by its NaN/bad-step policy): restarting reproduces them. Everything else — other exit codes,
death by a signal (OOM killer, SIGKILL), a hang — is retried with exponential backoff.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.artifacts import atomic_write_json
from domaintune.config import Config
from domaintune.console import console

RESTARTS = "restarts.json"
HEARTBEAT = "heartbeat.json"  # written by train.reporting.StepReporter (not imported: layering)
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


def read_heartbeat(train_dir: Path) -> dict[str, Any] | None:
    try:
        beat = json.loads((train_dir / HEARTBEAT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, or (never, given atomic writes) unreadable
    return beat if isinstance(beat, dict) and "time" in beat else None


def beat_since(train_dir: Path, since: float) -> dict[str, Any] | None:
    """The newest heartbeat written by the current attempt (an older one belongs to a dead child):
    the train stage's, or another training stage's of the same run (align writes one per phase,
    e.g. align/dpo/heartbeat.json)."""
    run = Path(train_dir).parent
    dirs = {Path(train_dir), *(p.parent for p in (*run.glob(f"*/{HEARTBEAT}"), *run.glob(f"*/*/{HEARTBEAT}")))}
    beats = [b for b in map(read_heartbeat, dirs) if b is not None and float(b["time"]) >= since]
    return max(beats, key=lambda b: float(b["time"])) if beats else None


def restart_record(attempt: int, cause: str, started_at: float, crashed_at: float,
                   beat: dict[str, Any] | None) -> dict[str, Any]:
    """One crash. `time_lost_s` is the work since the attempt's last finished step (or since it started)."""
    last_time = float(beat["time"]) if beat else started_at
    return {"attempt": attempt, "cause": cause, "last_step": beat["step"] if beat else None,
            "crashed_at": crashed_at, "resumed_at": None, "time_lost_s": round(crashed_at - last_time, 3),
            "recovery_s": None}


def load_history(train_dir: Path) -> list[dict[str, Any]]:
    """Continue the record of an interrupted series of attempts; a finished stage's restarts are old news."""
    path, manifest = train_dir / RESTARTS, train_dir / "manifest.json"
    if not path.is_file() or (manifest.is_file() and manifest.stat().st_mtime >= path.stat().st_mtime):
        return []
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return []
    return history if isinstance(history, list) else []


def restarts_of_this_run(train_dir: Path) -> list[dict[str, Any]]:
    """For the train manifest: the crashes before this (supervised) process, or [] when the process
    was not restarted by a supervisor (a restarts.json left by an earlier series is stale)."""
    try:
        records = json.loads((Path(train_dir) / RESTARTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    ok = isinstance(records, list) and records and isinstance(records[-1], dict)
    # getppid: under `accelerate launch` the supervised child is the launcher, the ranks its children
    return records if ok and records[-1].get("resumed_pid") in (os.getpid(), os.getppid()) else []


def note_elastic_restart(train_dir: Path, resumed_step: int) -> dict[str, Any] | None:
    """Under `torchrun --max-restarts N`, torchrun (not our supervisor) restarts the whole worker
    group after a crash; rank 0 of the new group records the restart here so the train manifest
    lists it like a supervised one. TORCHELASTIC_RESTART_COUNT is torchrun's protocol, not config."""
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0:
        return None
    now = time.time()
    beat = read_heartbeat(train_dir)  # written by the previous group's last finished step
    history = load_history(train_dir) if attempt > 1 else []
    record = {"attempt": attempt, "launcher": "torchrun", "cause": "worker group restarted by torchrun",
              "last_step": beat["step"] if beat else None, "resumed_step": resumed_step, "resumed_at": now,
              # the agent's pid: the same for every restart of this series, so the manifest knows it is current
              "resumed_pid": os.getppid(),
              "time_lost_s": round(now - float(beat["time"]), 3) if beat else None}
    history.append(record)
    atomic_write_json(train_dir / RESTARTS, history)
    return record


@dataclass
class _Attempt:
    proc: subprocess.Popen
    started_at: float
    hung: bool = False
    pending_recovery: dict[str, Any] | None = None  # the previous crash, waiting for our first step
    history: list[dict[str, Any]] = field(default_factory=list)


class Supervisor:
    def __init__(self, argv: list[str], cfg: Config, run_path: Path, kill_grace_s: float = KILL_GRACE_S,
                 poll_s: float = POLL_S):
        self.argv, self.t = list(argv), cfg.runtime.supervise
        self.train_dir = Path(run_path) / "train"
        self.final_stage = cfg.final_model_stage
        self.kill_grace_s, self.poll_s = kill_grace_s, poll_s
        self.history = load_history(self.train_dir)
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
            beat = beat_since(self.train_dir, attempt.started_at)
            record = restart_record(len(self.history) + 1, describe_exit(code, attempt.hung),
                                    attempt.started_at, crashed_at, beat)
            self.history.append(record)
            self._save()
            if restarts >= self.t.max_restarts:
                self._give_up(record)
                return code if code > 0 else 1
            delay = backoff_delay(restarts, self.t.restart_backoff_s)
            step = f"after step {record['last_step']}" if record["last_step"] is not None else "before any step"
            console.print(f"[bold yellow]supervise:[/] attempt {record['attempt']} crashed ({record['cause']}) "
                          f"{step}; restart {restarts + 1}/{self.t.max_restarts} in {delay:g}s "
                          f"(resumes from the newest checkpoint)")
            self._sleep(delay)
            if self._stopping:
                return code if code > 0 else 1
            restarts, pending = restarts + 1, record

    def _start(self, pending: dict[str, Any] | None) -> _Attempt:
        started_at = time.time()
        # own process group: killing it kills dataloader workers and accelerate ranks too
        proc = subprocess.Popen(self.argv, start_new_session=True)
        self._child = proc
        if pending is not None:  # resumed_pid: lets the train stage tell these records from stale ones
            pending |= {"resumed_at": started_at, "resumed_pid": proc.pid}
            self._save()
        return _Attempt(proc, started_at, pending_recovery=pending)

    def _wait(self, attempt: _Attempt) -> int:
        timeout = self.t.hang_timeout_s
        while True:
            try:
                # poll fast until the first step after a crash: recovery_s is measured to that step
                code = attempt.proc.wait(timeout=0.1 if attempt.pending_recovery else self.poll_s)
                self._note_recovery(attempt, beat_since(self.train_dir, attempt.started_at))
                return code
            except subprocess.TimeoutExpired:
                pass
            beat = beat_since(self.train_dir, attempt.started_at)
            self._note_recovery(attempt, beat)
            if timeout and not self._stopping and not self._training_finished(attempt.started_at):
                last = float(beat["time"]) if beat else attempt.started_at
                if time.time() - last > timeout:
                    console.print(f"[bold yellow]supervise:[/] no training step finished for {timeout:g}s "
                                  f"(runtime.supervise.hang_timeout_s); killing the child")
                    attempt.hung = True
                    return self._kill(attempt.proc)

    def _note_recovery(self, attempt: _Attempt, beat: dict[str, Any] | None) -> None:
        if beat is None or attempt.pending_recovery is None:
            return
        crash, attempt.pending_recovery = attempt.pending_recovery, None
        crash["recovery_s"] = round(float(beat["time"]) - crash["crashed_at"], 3)
        self._save()
        console.print(f"[green]supervise:[/] training resumed (step {beat['step']}) "
                      f"{crash['recovery_s']:.1f}s after the crash")

    def _training_finished(self, since: float) -> bool:
        """After training (e.g. `run` going on to eval/export) there are no heartbeats to expect:
        the train stage finished and is the last model stage, or the last model stage (e.g. align)
        wrote its manifest."""
        marker = self.train_dir / "checkpoints" / "finished.json"
        if self.final_stage in (None, "train"):
            return marker.is_file() and marker.stat().st_mtime >= since
        manifest = self.train_dir.parent / self.final_stage / "manifest.json"
        return manifest.is_file() and manifest.stat().st_mtime >= since

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

    def _save(self) -> None:
        self.train_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.train_dir / RESTARTS, self.history)

    def _give_up(self, last: dict[str, Any]) -> None:
        from rich.table import Table

        console.print(f"[bold red]supervise:[/] giving up after {self.t.max_restarts} restart(s) "
                      f"(runtime.supervise.max_restarts); last cause: {last['cause']}")
        table = Table(title=f"restarts — {self.train_dir / RESTARTS}", title_justify="left")
        for col in ("attempt", "cause", "last step", "time lost", "recovery"):
            table.add_column(col)
        for r in self.history:
            recovery = f"{r['recovery_s']:.1f}s" if r["recovery_s"] is not None else "-"
            step = str(r["last_step"]) if r["last_step"] is not None else "-"
            table.add_row(str(r["attempt"]), r["cause"], step, f"{r['time_lost_s']:.1f}s", recovery)
        console.print(table)


def supervise(argv: list[str], cfg: Config, run_path: Path, launcher: list[str] | None = None) -> int:
    """Run `argv` (a domaintune command) as a child process, restarting it after crashes and hangs
    per `cfg.runtime.supervise` (max_restarts, restart_backoff_s, hang_timeout_s). `launcher` is put in
    front of `argv` (e.g. a fault-injecting wrapper in tests). Returns 0 once a child succeeds,
    otherwise the last child's exit code (1 if it died by a signal)."""
    return Supervisor([*(launcher or []), *argv], cfg, run_path).run()
