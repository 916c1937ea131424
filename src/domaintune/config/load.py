"""One YAML -> pydantic model loader for the run config, rules files and task specs: YAML syntax
errors with line and column, every problem at once under its dotted key, did-you-mean for
unknown keys. The run config adds `key.path=value` overrides, migration of old keys, and paths
resolved against the config file's folder (through the validation context)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from domaintune.config.base import BASE_DIR
from domaintune.config.migrate import migrate, migrate_override
from domaintune.config.schema import Config
from domaintune.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, what: str = "file", key: str | None = None) -> dict[str, Any]:
    """The top-level mapping of a YAML file; syntax errors name the line and column."""
    if not path.is_file():
        raise ConfigError([f"{key + ': ' if key else ''}{what} not found: {path}"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"], source=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping of keys"], source=str(path))
    return raw


def validate_model(model: type[M], raw: dict[str, Any], source: str, context: dict[str, Any] | None = None,
                   renamed: dict[str, str] | None = None) -> M:
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model, renamed), source=source) from None


def load_yaml_model(path: str | Path, model: type[M], what: str = "file", key: str | None = None,
                    context: dict[str, Any] | None = None) -> M:
    """Read YAML `path` into `model`; every problem names its dotted key and the file. `key`: the
    config key that named the file (for a missing file)."""
    path = Path(path)
    return validate_model(model, read_yaml(path, what, key), str(path), context)


# --------------------------------------------------------------------------- error formatting
def _sub_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation: Model, Model | None, list[Model], dict[str, Model]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _sub_model(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The sub-model reached by following `loc` (list indexes and dict keys are skipped)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _sub_model(field.annotation)
        if model is None:
            return None
    return model


def _dotted_fields(model: type[BaseModel], prefix: str = "", depth: int = 2) -> list[str]:
    """Field names of `model`, plus those of its sub-sections as 'block.key' (did-you-mean across a
    block boundary: train.batchsize -> batch.batch_size)."""
    names = []
    for name, field in model.model_fields.items():
        names.append(prefix + name)
        sub = _sub_model(field.annotation)
        if sub is not None and depth > 1:
            names += _dotted_fields(sub, f"{prefix}{name}.", depth - 1)
    return names


def _unknown_key_hint(model: type[BaseModel] | None, key: str) -> str:
    """The closest key of `model`, or of one of its sub-sections as 'block.key'."""
    if model is None:
        return ""
    candidates = {name: name for name in model.model_fields}  # a direct key wins a tie
    for dotted in _dotted_fields(model):  # the first block holding a key wins (batch before auto_eval)
        candidates.setdefault(dotted.rsplit(".", 1)[-1], dotted)
    close = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{candidates[close[0]]}'?)" if close else ""


def _written_as(path: str, renamed: dict[str, str]) -> str:
    """The key as the user wrote it: a migrated key is reported under its old name."""
    for new, old in renamed.items():
        if path == new or path.startswith(new + "."):
            return old + path[len(new):]
    return path


def format_validation_error(err: ValidationError, model: type[BaseModel] = Config,
                            renamed: dict[str, str] | None = None) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = _written_as(".".join(str(p) for p in loc) or "(root)", renamed or {})
        if e["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown key{_unknown_key_hint(_model_at(model, loc[:-1]), str(loc[-1]))}")
        elif e["type"] == "missing":
            problems.append(f"{path}: required key is missing")
        else:
            problems.append(_value_problem(path, e["msg"].removeprefix("Value error, "), e.get("input")))
    return problems


def _value_problem(path: str, msg: str, given: Any) -> str:
    """A section validator's messages start with the key inside the section ('guards.x: ...'):
    joined to the section's path they name the full dotted key."""
    if isinstance(given, dict):  # a section-level rule: the input is the whole section
        parts = [p.strip() for p in msg.split("; ")]
        if path == "(root)":
            return "; ".join(parts)
        return "; ".join(f"{path}.{p}" if _KEY_FIRST.match(p) else f"{path}: {p}" for p in parts)
    return f"{path}: {msg} (got {given!r:.80})"


_KEY_FIRST = re.compile(r"^[a-z_][\w.\[\]]*:")


# --------------------------------------------------------------------------- the run config
def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (so 3, true, [a, b] work). An old
    key is mapped to its new place (see migrate.py)."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override '{item}' is not key.path=value")
            continue
        for target in migrate_override(key.strip(), raw):
            problem = _set_override(raw, target, yaml.safe_load(value) if value != "" else None)
            problems += [problem] if problem else []
    if problems:
        raise ConfigError(problems, source="command-line overrides")
    return raw


def _set_override(raw: dict[str, Any], key: str, value: Any) -> str | None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node.get(part, {}), dict):
            return f"override '{key}': '{part}' is not a section"
        node = node.setdefault(part, {})
    node[leaf] = value
    return None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    raw = read_yaml(path, "config file")
    try:
        raw, moves = migrate(raw)
    except ValueError as exc:
        raise ConfigError(str(exc).split("; "), source=str(path)) from None
    raw = apply_overrides(raw, overrides or [])
    base = path.parent.resolve()
    cfg = validate_model(Config, raw, str(path), context={BASE_DIR: base}, renamed={n: o for o, n in moves})
    cfg._source_dir = base
    return cfg
