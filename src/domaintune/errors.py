"""Error types the CLI prints as one clear message, without a traceback.

Every message should name the file / line / key at fault and say how to fix it.
"""

from __future__ import annotations


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
