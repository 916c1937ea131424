"""What `domaintune serve` resolves before serving: the `serve:` settings and the model folder.

The `serve:` section is part of the run config (`domaintune.config.serve`), so it is validated,
overridden (`serve.port=9000`) and checked by `domaintune validate` like every other section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from domaintune.config import Config, ServeConfig, load_config
from domaintune.config.base import BASE_DIR
from domaintune.config.load import format_validation_error
from domaintune.errors import ConfigError, ModelError

SERVE_KEY = "serve"


def validate_settings(raw: Any, base_dir: Path, source: str) -> ServeConfig:
    """A `serve:` mapping on its own (no run config: `serve --model DIR`), with the config's error format."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError([f"{SERVE_KEY}: must be a mapping of settings"], source=source)
    try:
        return ServeConfig.model_validate(raw or {}, context={BASE_DIR: Path(base_dir)})
    except ValidationError as err:
        problems = format_validation_error(err, ServeConfig)
        raise ConfigError([f"{SERVE_KEY}.{p}" for p in problems], source=source) from None


def load_with_settings(path: Path, overrides: list[str]) -> tuple[Config, ServeConfig]:
    """(the run config, its `serve:` section); `serve.x=...` overrides apply like any other."""
    cfg = load_config(path, overrides)
    settings = cfg.serve
    if settings.console.runs_dir is None:  # the console's run dashboard lists this config's runs
        settings = settings.model_copy(update={"console": settings.console.model_copy(
            update={"runs_dir": Path(cfg.runs_dir)})})
    return cfg, settings


def run_model(cfg: Config):
    """The run's last model: the export stage's folder if it ran, else the last training stage's output.
    Also returns the base model, which an adapter folder is applied to."""
    from domaintune.artifacts import RunDir

    run = RunDir(cfg.run_path)
    if cfg.serve.weights == "int8":  # export.quantize: int8's folder (serve/loading.py)
        from domaintune.serve.loading import int8_export

        return int8_export(cfg, run), cfg.model
    for stage in ("export", cfg.final_model_stage):
        if stage and run.manifest(stage) is not None:
            return run.output(stage, "model", by="serve"), cfg.model
    raise ModelError(f"run '{cfg.name}' in {cfg.run_path} has no model yet: run `domaintune run CONFIG` first, or "
                     f"serve any model folder with `domaintune serve --model DIR`")


def with_flags(settings: ServeConfig, host: str | None, port: int | None) -> ServeConfig:
    """Apply --host/--port and validate again (the public-bind rule must see the final host)."""
    data = settings.model_dump()
    data.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as err:  # the public-bind rule
        raise ConfigError([e["msg"].removeprefix("Value error, ") for e in err.errors()],
                          source="--host/--port") from None
