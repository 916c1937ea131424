"""Building blocks of every config section: the strict base model, counts, path types resolved
against the config file's folder, and the marker for settings that cannot change a result."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationInfo,
    WrapSerializer,
)

# Validation context key: the folder relative paths resolve against (the config file's folder).
BASE_DIR = "base_dir"
# Serialization context key: dump paths relative to this folder (fingerprints survive a move).
RELATIVE_TO = "relative_to"
# Field marker: the value changes how a run is observed, saved or restarted, never what it computes.
VOLATILE = {"volatile": True}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    # A whole section that cannot change a result (logging, runtime): see `result_settings`.
    volatile: ClassVar[bool] = False

    def decisive_volatile(self) -> set[str]:
        """Dotted keys (relative to this section) marked volatile that do decide the result with
        these particular settings (e.g. save_every under spike rollback)."""
        return set()


def is_volatile_field(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("volatile"))


def _parse_count(value: Any) -> Any:
    """Accept 50_000, '50k', '2.5M', '1B' for token budgets."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbB]?)\s*", value)
        if not m:
            raise ValueError(f"'{value}' is not a count; write e.g. 200000, '200k', '50M' or '1B'")
        scale = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[m.group(2).lower()]
        return int(float(m.group(1)) * scale)
    return value


Count = Annotated[int, BeforeValidator(_parse_count), Field(gt=0)]
CountOrZero = Annotated[int, BeforeValidator(_parse_count), Field(ge=0)]


# --------------------------------------------------------------------------- paths
def _base_dir(info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get(BASE_DIR)
    return Path(base) if base is not None else None


def _resolve(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _path_resolver(applies):
    def resolve(value: str, info: ValidationInfo) -> str:
        base = _base_dir(info)
        return _resolve(value, base) if base is not None and applies(value, base) else value
    return resolve


def _relativize(value: Any, handler, info: SerializationInfo) -> Any:
    out = handler(value)
    root = (info.context or {}).get(RELATIVE_TO)
    if root is None or not isinstance(out, str) or not Path(out).is_absolute():
        return out
    return Path(os.path.relpath(out, root)).as_posix()


def _as_str(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value  # Path objects from Python callers


def _path_type(applies):
    return Annotated[str, BeforeValidator(_as_str), AfterValidator(_path_resolver(applies)),
                     WrapSerializer(_relativize)]


def _not_package(value: str, base: Path) -> bool:
    return not value.startswith("package:")


# A file or folder path: relative values resolve against the config file's folder.
FilePath = _path_type(_not_package)
# A benchmark task: a built-in name stays a name, a .yaml/.yml path resolves.
TaskRef = _path_type(lambda v, base: _not_package(v, base) and v.endswith((".yaml", ".yml")))
# A chat template: a shipped name stays a name, a .jinja file resolves.
TemplateRef = _path_type(lambda v, base: v.endswith(".jinja"))
# A model: a hub id stays an id; './x', '/x', '~/x' or an existing relative folder/file resolves.
ModelRef = _path_type(lambda v, base: v.startswith((".", "/", "~")) or (base / v).exists())


# --------------------------------------------------------------------------- what decides a result
def result_settings(section: BaseModel, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """`section` as JSON-able data without its volatile fields and sub-sections: the settings
    that decide a result (hashed for stage fingerprints and checkpoint resume keys)."""
    return _strip(section, section.model_dump(mode="json", context=context), set())


def _strip(value: BaseModel, dumped: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    keep = keep | (value.decisive_volatile() if isinstance(value, Section) else set())
    out = {}
    for name in type(value).model_fields:
        sub = getattr(value, name)
        volatile = is_volatile_field(type(value), name) or (isinstance(sub, Section) and sub.volatile)
        if volatile and name not in keep:
            continue
        inner = {k.split(".", 1)[1] for k in keep if k.startswith(name + ".")}
        out[name] = _strip(sub, dumped[name], inner) if isinstance(sub, BaseModel) else dumped[name]
    return out


def volatile_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys under `model` that cannot change a result (for docs and tests)."""
    keys = []
    for name, field in model.model_fields.items():
        sub = next((c for c in (field.annotation, *getattr(field.annotation, "__args__", ()))
                    if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if is_volatile_field(model, name) or (sub is not None and issubclass(sub, Section) and sub.volatile):
            keys.append(prefix + name)
        elif sub is not None:
            keys += volatile_keys(sub, f"{prefix}{name}.")
    return keys


class ConfigWarning(UserWarning):
    """A config that runs but probably does not do what its author meant (printed by the CLI)."""


class ConfigDeprecation(ConfigWarning):
    """A renamed or moved key, mapped to its new place before validation."""
