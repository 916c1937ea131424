"""Metric backends besides the always-on metrics.jsonl (`train.logging.report_to`, `sft.logging.report_to`).

Each backend is a thin adapter over the library's public API. Backend packages are optional and
imported only when a tracker is built; `missing_packages` checks for them without importing, so
`domaintune validate` can report a missing backend, with the extra that installs it, before a run
starts (none is in the base install: `pip install 'domaintune[tensorboard]'`). A backend that fails in
the middle of a run is disabled by `TrackerGroup` with one warning: losing a dashboard must not
kill a long training run, and metrics.jsonl still has every step.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import numbers
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.markup import escape

from domaintune.console import console
from domaintune.errors import ConfigError
from domaintune.extras import available, require

CONFIG_KEY = "train.logging.report_to"  # the default key named in messages; callers pass the one in use
DEFAULT_PROJECT = "domaintune"


@runtime_checkable
class Tracker(Protocol):
    def log(self, metrics: dict[str, float | int], step: int) -> None: ...

    def log_config(self, config: dict) -> None: ...

    def close(self) -> None: ...


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The values a backend can plot: numbers only, bools as 0/1.

    Strings and None are skipped, and so is a `step` key: the step travels as its own argument,
    and plotting it against itself is noise.
    """
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        if key == "step" or value is None:
            continue
        if isinstance(value, (bool, numbers.Integral)):
            out[key] = int(value)
        elif isinstance(value, numbers.Real):  # float, numpy floats
            out[key] = float(value)
    return out


def _jsonable(config: dict) -> dict:
    """Paths, enums and other objects as strings, so every backend can serialise the config."""
    return json.loads(json.dumps(config, default=str))


def flatten_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}; lists stay whole (as JSON)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten_config(value, f"{name}.")
        else:
            flat[name] = value
    return flat


# ---------------------------------------------------------------------------------- TensorBoard

class TensorBoardTracker:
    """Scalars under their metric keys as tags (`train/loss/legal` groups under `train/`)."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, flush_secs: int = 10):
        require("tensorboard", "tensorboard", f"{CONFIG_KEY}: [tensorboard]")  # torch's writer needs it
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        for tag, value in numeric_metrics(metrics).items():
            self._writer.add_scalar(tag, value, global_step=step)

    def log_config(self, config: dict) -> None:
        text = json.dumps(_jsonable(config), indent=2, ensure_ascii=False)
        # Indented lines render as a code block in TensorBoard's markdown text view.
        self._writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))

    def close(self) -> None:
        self._writer.close()


# ---------------------------------------------------------------------------------- wandb

class WandbTracker:
    """A wandb run; its local files go under `out_dir/wandb`."""

    name = "wandb"

    def __init__(self, project: str, run_name: str, out_dir: Path, config: dict | None = None):
        wandb = require("wandb", "wandb", f"{CONFIG_KEY}: [wandb]")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, name=run_name, dir=str(out_dir),
                               config=_jsonable(config) if config else None)

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        values = numeric_metrics(metrics)
        if values:
            self._run.log(values, step=step)

    def log_config(self, config: dict) -> None:
        self._run.config.update(_jsonable(config), allow_val_change=True)

    def close(self) -> None:
        self._run.finish()


# ---------------------------------------------------------------------------------- MLflow

MLFLOW_MAX_KEY = 250
MLFLOW_MAX_PARAM_VALUE = 500
_MLFLOW_BAD_CHARS = re.compile(r"[^\w.\- /]")


def mlflow_key(key: str) -> str:
    """A name MLflow accepts: alphanumerics, `_ - . /` and spaces, and no path tricks
    (`a//b`, `/a`, `a/`, `.` and `..` segments are rejected by its file store)."""
    cleaned = _MLFLOW_BAD_CHARS.sub("_", key)
    parts = [p if p != ".." else "__" for p in cleaned.split("/") if p not in ("", ".")]
    return ("/".join(parts) or "_")[:MLFLOW_MAX_KEY]


class MlflowTracker:
    """An MLflow run in a local file store under `out_dir/mlruns` unless `tracking_uri` is given.

    The store is chosen here, never from MLFLOW_TRACKING_URI: the resolved config alone decides
    where a run's metrics go.
    """

    name = "mlflow"

    def __init__(self, run_name: str, out_dir: Path, tracking_uri: str | None = None,
                 experiment: str | None = None):
        mlflow = require("mlflow", "mlflow", f"{CONFIG_KEY}: [mlflow]")
        self._mlflow = mlflow
        uri = tracking_uri or (Path(out_dir) / "mlruns").resolve().as_uri()
        mlflow.set_tracking_uri(uri)
        if experiment:
            mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_name=run_name)
        self._closed = False

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        values = {mlflow_key(k): v for k, v in numeric_metrics(metrics).items()}
        if values:
            self._mlflow.log_metrics(values, step=step)

    def log_config(self, config: dict) -> None:
        params = {}
        for key, value in flatten_config(_jsonable(config)).items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            params[mlflow_key(key)] = text[:MLFLOW_MAX_PARAM_VALUE]
        if params:
            self._mlflow.log_params(params)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._mlflow.end_run()


# ---------------------------------------------------------------------------------- building

# name -> (package that must be importable, factory(out_dir, run_name, project)); each package is
# installed by the domaintune extra of the same name
BACKENDS: dict[str, tuple[str, Callable[[Path, str, str], Tracker]]] = {
    "tensorboard": ("tensorboard", lambda out, run, _project:
                     TensorBoardTracker(out / "tensorboard")),
    "wandb": ("wandb", lambda out, run, project: WandbTracker(project, run, out)),
    "mlflow": ("mlflow", lambda out, run, project: MlflowTracker(run, out, experiment=project)),
}


def missing_packages(report_to: Iterable[str], key: str = CONFIG_KEY) -> list[str]:
    """One problem line per unknown backend or backend whose package is not installed (`key`: the
    config key that named them)."""
    problems = []
    for name in dict.fromkeys(report_to):
        if name not in BACKENDS:
            close = difflib.get_close_matches(name, list(BACKENDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{key}: unknown backend '{name}'{hint}; "
                            f"choose from {', '.join(BACKENDS)}")
            continue
        package = BACKENDS[name][0]
        if not available(package):
            problems.append(f"{key}: '{name}' needs the {package} package: "
                            f"pip install 'domaintune[{name}]' (or remove '{name}' from {key})")
    return problems


def build_trackers(report_to: list[str], out_dir: Path, run_name: str,
                   project: str = DEFAULT_PROJECT, key: str = CONFIG_KEY) -> list[Tracker]:
    """The trackers named in `report_to` (the config `key`), writing under the stage folder `out_dir`.

    `project` is the wandb project and the MLflow experiment. Raises ConfigError listing every
    unknown or uninstalled backend before any is started.
    """
    problems = missing_packages(report_to, key)
    if problems:
        raise ConfigError(problems)
    out_dir = Path(out_dir)
    trackers: list[Tracker] = []
    try:
        for name in dict.fromkeys(report_to):
            trackers.append(BACKENDS[name][1](out_dir, run_name, project))
    except BaseException:
        for tracker in trackers:  # don't leave a half-started set of runs behind
            _close_quietly(tracker)
        raise
    return trackers


def _close_quietly(tracker: Tracker) -> None:
    # already failing: the first error is the one to report
    with contextlib.suppress(Exception):
        tracker.close()


# ---------------------------------------------------------------------------------- fan-out

def _label(tracker: Tracker) -> str:
    return getattr(tracker, "name", type(tracker).__name__)


class TrackerGroup:
    """Sends every call to each tracker; a tracker that raises is warned about once and dropped."""

    def __init__(self, trackers: Iterable[Tracker]):
        self.trackers = list(trackers)
        self._active = list(self.trackers)
        self._closed = False

    @property
    def active(self) -> list[Tracker]:
        return list(self._active)

    def _disable(self, tracker: Tracker, what: str, exc: Exception, close: bool) -> None:
        self._active.remove(tracker)
        console.print(f"[yellow]warning:[/] metric backend '{escape(_label(tracker))}' failed "
                      f"{escape(what)} ({escape(type(exc).__name__)}: {escape(str(exc))}); "
                      "disabled for the rest of this run, metrics.jsonl still has every step")
        if close:  # release its files/threads; a failure while closing is not retried
            _close_quietly(tracker)

    def _each(self, what: str, call: Callable[[Tracker], None], close_failed: bool = True) -> None:
        for tracker in list(self._active):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - any backend failure must not stop training
                self._disable(tracker, what, exc, close=close_failed)

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        self._each(f"at step {step}", lambda t: t.log(metrics, step))

    def log_config(self, config: dict) -> None:
        self._each("logging the config", lambda t: t.log_config(config))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._each("while closing", lambda t: t.close(), close_failed=False)
        self._active.clear()

    def __enter__(self) -> TrackerGroup:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
