"""One shared rich console and progress-bar factory, so every stage reports the same way."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=False, highlight=False)


def progress(transient: bool = False, disable: bool = False) -> Progress:
    """A progress bar with count, elapsed time and ETA; use as a context manager."""
    return Progress(
        TextColumn("  [bold blue]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=disable,
    )


def quiet_third_party() -> None:
    """Silence library progress bars and known-harmless warnings: our rich progress replaces them,
    and interleaved tqdm bars make the output unreadable. Library warnings stay on: muting them all
    would also hide "weights not initialized / not used" when a base does not match its architecture."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.utils.logging.disable_progress_bar()
    except ImportError:
        pass
