"""What `domaintune serve` resolves before serving: the `serve:` settings and the model folder.

Until the `serve:` section moves into the config package, the root Config does not know the key,
so it is taken out of the YAML here, validated with ServeSettings, and the rest is validated by
the config module's own steps (the same overrides, path resolution and error format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from domaintune.errors import ConfigError, ModelError
from domaintune.serve.settings import ServeSettings

SERVE_KEY = "serve"


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid YAML: {exc}"], source=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping of sections"], source=str(path))
    return raw


def validate_settings(raw: Any, base_dir: Path, source: str) -> ServeSettings:
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError([f"{SERVE_KEY}: must be a mapping of settings"], source=source)
    try:
        settings = ServeSettings.model_validate(raw or {})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join([SERVE_KEY, *(str(p) for p in e["loc"])])
            what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {what}")
        raise ConfigError(problems, source=source) from None
    return settings.resolve_paths(base_dir)


def load_with_settings(path: Path, overrides: list[str]):
    """(Config without `serve`, ServeSettings); `serve.x=...` overrides apply to the settings."""
    from domaintune import config as config_module

    raw = _read_yaml(path)
    serve_raw = {SERVE_KEY: raw.pop(SERVE_KEY, None) or {}}
    mine = [o for o in overrides if o.startswith(SERVE_KEY + ".")]
    config_module.apply_overrides(serve_raw, mine)
    settings = validate_settings(serve_raw[SERVE_KEY], path.parent.resolve(), str(path))
    raw = config_module.apply_overrides(raw, [o for o in overrides if o not in mine])
    config_module._resolve_paths(raw, path.parent.resolve())  # the config's one rule for relative paths
    try:
        cfg = config_module.Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(config_module.format_validation_error(err), source=str(path)) from None
    return cfg, settings


def run_model(cfg) -> tuple[Path, str | None]:
    """The run's last model: the export stage's folder if it ran, else the last training stage's output.
    Also returns the base model, which an adapter folder is applied to."""
    from domaintune.artifacts import RunDir

    run = RunDir(cfg.run_path)
    for stage in ("export", cfg.final_model_stage):
        if stage and run.manifest(stage) is not None:
            return run.output(stage, "model", by="serve"), cfg.model.base
    raise ModelError(f"run '{cfg.name}' in {cfg.run_path} has no model yet: run `domaintune run CONFIG` first, or "
                     f"serve any model folder with `domaintune serve --model DIR`")


def with_flags(settings: ServeSettings, host: str | None, port: int | None) -> ServeSettings:
    """Apply --host/--port and validate again (the public-bind rule must see the final host)."""
    data = settings.model_dump()
    data.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    try:
        return ServeSettings.model_validate(data)
    except ValidationError as err:
        raise ConfigError([e["msg"].removeprefix("Value error, ") for e in err.errors()],
                          source="--host/--port") from None
