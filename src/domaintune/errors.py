"""Error types the CLI prints as one clear message, without a traceback.

Every message should name the file / line / key at fault and say how to fix it.
"""

from __future__ import annotations

import errno


class DomainTuneError(Exception):
    """Base class for expected, user-facing failures (exit code 2 unless a subclass says otherwise)."""

    exit_code = 2


class ConfigError(DomainTuneError):
    """The YAML config or a CLI override is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


class DataError(DomainTuneError):
    """Input data cannot be used (e.g. too many rejected records, empty stream)."""


class ModelError(DomainTuneError):
    """A model or tokenizer cannot be loaded, imported or verified."""


class StageError(DomainTuneError):
    """A stage cannot run: missing upstream outputs, unknown stage name, ..."""


class CheckpointError(DomainTuneError):
    """A checkpoint is missing, incomplete, corrupt or incompatible with the run."""


class GateFailed(DomainTuneError):
    """An evaluation gate failed; the pipeline must stop before export."""

    exit_code = 3


class TrainingAborted(DomainTuneError):
    """Training stopped on purpose: non-finite loss/gradients under policy 'stop' or too many bad steps."""

    exit_code = 4


class Preempted(DomainTuneError):
    """SIGTERM/SIGINT: a checkpoint was saved at a step boundary; re-run to resume."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class StorageError(DomainTuneError):
    """The disk is full, or a folder domaintune must write (or read) does not allow it: fixed outside
    domaintune, so restarting (`--supervise`) would only repeat it."""


# OS errors a user fixes outside the program: (what happened, how to fix it).
_OS_PROBLEMS = {
    errno.ENOSPC: ("no space left on the device", "free disk space, or set runs_dir to a disk with room"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota, or set runs_dir to another disk"),
    errno.EACCES: ("permission denied", "give this user access to it, or set runs_dir to a folder you can write"),
    errno.EPERM: ("operation not permitted", "give this user access to it, or set runs_dir to a folder you can write"),
    errno.EROFS: ("read-only file system", "set runs_dir to a folder on a writable disk"),
}


def storage_error(exc: BaseException) -> StorageError | None:
    """A one-line StorageError for a full disk or an unwritable path, found on `exc` or on what it was
    raised from (`raise ... from`); None for any other exception, which keeps its traceback."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _OS_PROBLEMS:
            what, fix = _OS_PROBLEMS[seen.errno]
            where = f": {seen.filename}" if seen.filename else " (the path was not reported)"
            return StorageError(f"{what}{where}; {fix}")
        seen = seen.__cause__
    return None
