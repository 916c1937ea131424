"""On-disk layout of a run and the manifests that make stages resumable.

runs/<name>/<stage>/            outputs of one stage
runs/<name>/<stage>/manifest.json   written LAST and atomically: its presence means "done"
runs/<name>/cache/              results reusable across stages (e.g. base-model eval)
runs/<name>/<stage>/heartbeat.json  "a training step finished, at this time" (the --supervise watchdog)
runs/<name>/<stage>/restarts.json   the crashes of the current series of restarts (--supervise, torchrun)

Stages talk to each other only through these folders: a stage reads its upstream's manifest
(`RunDir.require`) and the files it lists under `outputs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from domaintune.errors import StageError

MANIFEST = "manifest.json"
HEARTBEAT, RESTARTS = "heartbeat.json", "restarts.json"
# Packages whose version can change a result (trl decides DPO and reward training, datatrove the
# data pipeline, tokenizers the token ids); manifests record the installed ones.
TRACKED_PACKAGES = ("domaintune", "torch", "transformers", "peft", "accelerate", "datasets", "trl", "datatrove",
                    "tokenizers", "safetensors", "bitsandbytes")


@dataclass
class StageResult:
    """What a stage returns: output paths (relative to its folder) and metrics for the manifest."""

    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: str = ""  # one line for the CLI's final table


def stable_hash(obj: Any) -> str:
    """sha256 of canonical JSON: equal settings give equal hashes regardless of key order."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class FileHashCache:
    """Content hashes of files, remembered by (path, size, mtime) so an unchanged multi-GB model is
    hashed once, not on every `run`. A file that was copied or moved is hashed again (its stat
    changed) and gets the same hash: fingerprints depend on content only."""

    def __init__(self, path: Path | None = None):
        self.path, self._dirty = path, False
        self._hashes: dict[str, str] = {}
        if path is not None and path.is_file():
            try:
                self._hashes = dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):  # a corrupt cache is only a slower run
                self._hashes = {}

    def hash(self, path: Path) -> str:
        st = path.stat()
        key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in self._hashes:
            self._hashes[key], self._dirty = _sha256_file(path), True
        return self._hashes[key]

    def save(self) -> None:
        if self.path is not None and self._dirty:
            atomic_write_json(self.path, self._hashes)
            self._dirty = False


_PROCESS_CACHE = FileHashCache()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def fingerprint_file(path: Path, cache: FileHashCache | None = None) -> str:
    return (cache or _PROCESS_CACHE).hash(path)


def fingerprint_path(path: str | Path, cache: FileHashCache | None = None) -> str:
    """Fingerprint a file or a folder (recursively) by content; a non-existent path hashes its name
    only. Folder entries are named relative to the folder, so the location never matters."""
    p = Path(path)
    if p.is_file():
        return fingerprint_file(p, cache)
    if p.is_dir():
        entries = {f.relative_to(p).as_posix(): fingerprint_file(f, cache)
                   for f in sorted(p.rglob("*")) if f.is_file() and "__pycache__" not in f.parts}
        return "dir:" + stable_hash(entries)
    return "ref:" + str(path)  # e.g. a hub id: identified by name (+ revision, hashed by caller)


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(binary file)` on a temp file in the same folder, fsync, then rename: readers never
    see half a file, and the rename itself is made durable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a result (those installed; bitsandbytes only with QLoRA)."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    """A heartbeat `{"stage", "phase", "step", "time", "pid"}` (written by training.heartbeat), or None."""
    try:
        beat = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, or (never, given atomic writes) unreadable
    return beat if isinstance(beat, dict) and "time" in beat else None


@dataclass
class RestartLog:
    """One stage's `restarts.json`: the crashes of one *series* of attempts (one `--supervise`
    session, or one torchrun restart series), as `{"series": id, "records": [...]}`.

    The stage names the series it finished in its manifest (`metrics.restart_series`), so a later
    supervisor starts a new series instead of continuing a finished one; no file times are compared.
    """

    path: Path
    manifest_path: Path

    def read(self) -> tuple[str | None, list[dict[str, Any]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, []
        if not isinstance(data, dict) or not isinstance(data.get("records"), list):
            return None, []
        return data.get("series"), data["records"]

    def write(self, series: str, records: list[dict[str, Any]]) -> None:
        atomic_write_json(self.path, {"series": series, "records": records})

    def open_series(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The series to continue: the file's, unless the stage has finished it since."""
        series, records = self.read()
        if series is None or series == self._finished_series():
            return None, []
        return series, records

    def _finished_series(self) -> str | None:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return manifest.get("metrics", {}).get("restart_series") if isinstance(manifest, dict) else None

    def for_manifest(self) -> dict[str, Any]:
        """The stage's manifest entries: the restarts that led to *this* process ([] unless it was
        restarted), and the series it thereby finishes. The supervisor stamps the pid of the process
        it starts on the last record; under `accelerate launch` that is this rank's parent."""
        series, records = self.read()
        current = bool(records) and isinstance(records[-1], dict) \
            and records[-1].get("resumed_pid") in (os.getpid(), os.getppid())
        return {"restarts": records if current else [], "restart_series": series}


def _is_domaintune_checkout(root: Path) -> bool:
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(r'(?m)^name\s*=\s*"domaintune"\s*$', text) is not None


def git_sha(package_dir: Path | None = None) -> str | None:
    """domaintune's own commit, or None unless this package runs from its source checkout
    (<checkout>/src/domaintune: an editable install or PYTHONPATH=src). Installed into a virtualenv
    inside a user's repository, `git rev-parse` would otherwise report that repository's HEAD."""
    package_dir = Path(package_dir or Path(__file__).parent).resolve()
    root = package_dir.parent.parent
    if package_dir.parent.name != "src" or not _is_domaintune_checkout(root):
        return None
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return None
    return _git(root, "rev-parse", "HEAD")


class RunDir:
    """The folder of one run: `runs_dir/name`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def cache_dir(self, kind: str) -> Path:
        d = self.root / "cache" / kind
        d.mkdir(parents=True, exist_ok=True)
        return d

    def heartbeat_path(self, stage: str) -> Path:
        """Where a training stage beats after every step (one file per stage, whatever its phases)."""
        return self.root / stage / HEARTBEAT

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """The current heartbeat of every stage that wrote one, by stage name."""
        if not self.root.is_dir():
            return {}
        beats = {d.name: read_heartbeat(d / HEARTBEAT) for d in self.root.iterdir() if d.is_dir()}
        return {stage: beat for stage, beat in beats.items() if beat is not None}

    def restarts(self, stage: str) -> RestartLog:
        return RestartLog(self.root / stage / RESTARTS, self.manifest_path(stage))

    def manifest_path(self, stage: str) -> Path:
        return self.root / stage / MANIFEST

    def manifest(self, stage: str) -> dict[str, Any] | None:
        """The stage's manifest, or None if the stage never finished or its manifest is unreadable
        (a corrupt manifest counts as "not finished": running the stage again rewrites it)."""
        try:
            return self._read_manifest(stage)
        except StageError:
            return None

    def _read_manifest(self, stage: str) -> dict[str, Any] | None:
        path = self.manifest_path(stage)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StageError(self._corrupt(stage, path, f"{type(exc).__name__}: {exc}")) from exc
        if not isinstance(data, dict):
            raise StageError(self._corrupt(stage, path, f"a JSON {type(data).__name__}, not an object"))
        return data

    @staticmethod
    def _corrupt(stage: str, path: Path, why: str) -> str:
        return (f"the manifest of stage '{stage}' is corrupt ({path}: {why}); it was probably cut short by a crash "
                f"or a full disk. Run that stage again (a corrupt manifest counts as not finished): "
                f"domaintune run CONFIG --stages {stage}")

    def require(self, stage: str, by: str) -> dict[str, Any]:
        """The upstream manifest a stage needs; a clear error if that stage has not run or its
        manifest is corrupt."""
        m = self._read_manifest(stage)
        if m is None:
            raise StageError(
                f"stage '{by}' needs the outputs of stage '{stage}', which has not finished in "
                f"{self.root}. Run it first: domaintune run CONFIG --stages {stage}"
            )
        return m

    def output(self, stage: str, key: str, by: str) -> Path:
        """Absolute path of an output `key` listed in an upstream stage's manifest."""
        m = self.require(stage, by)
        if key not in m.get("outputs", {}):
            raise StageError(f"stage '{stage}' in {self.root} has no output '{key}' (needed by '{by}')")
        return self.root / stage / m["outputs"][key]

    def write_manifest(self, stage: str, manifest: dict[str, Any]) -> Path:
        path = self.manifest_path(stage)
        atomic_write_json(path, manifest)
        return path

    def invalidate(self, stage: str) -> None:
        """Forget that a stage finished (its outputs stay until it re-runs)."""
        self.manifest_path(stage).unlink(missing_ok=True)
