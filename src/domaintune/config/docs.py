"""`python -m domaintune.config.docs > docs/config.md`: the config reference, generated from the
schema's field descriptions (a test fails when the committed file is stale)."""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from domaintune.config.base import Section, is_volatile_field
from domaintune.config.load import _sub_model
from domaintune.config.migrate import MOVES
from domaintune.config.schema import STAGE_SECTIONS, Config

HEADER = """# Configuration reference

Generated from the schema by `python -m domaintune.config.docs > docs/config.md`; do not edit by hand.

One YAML file describes a run. Unknown keys are errors (with a did-you-mean); relative paths resolve
against the config file's folder; `domaintune run cfg.yaml key.path=value` overrides any key.
Keys marked *volatile* cannot change a result: editing them never re-runs a stage, and a run may
resume across a change to them.
"""


def _type_name(annotation: Any) -> str:
    """A short, readable type: int, path, list[str], 'a' / 'b', ... or null."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return "path" if _is_path(args[1:]) else _type_name(args[0])
    if origin is typing.Literal:
        return " / ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _is_path(metadata) -> bool:
    return any(getattr(getattr(m, "func", None), "__name__", "") == "resolve" for m in metadata)


def _field_type(field: FieldInfo) -> str:
    """pydantic keeps a top-level Annotated's validators in `metadata`, not in the annotation."""
    if _is_path(field.metadata):
        return "path" if field.annotation is str else "path or null"
    return _type_name(field.annotation)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    if isinstance(field.default, BaseModel):
        return "(section)"
    return f"`{json.dumps(field.default)}`"


def _rows(model: type[BaseModel], prefix: str, volatile: bool, sections: list) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key, sub = prefix + name, _sub_model(field.annotation)
        is_volatile = volatile or is_volatile_field(model, name) or bool(
            sub is not None and issubclass(sub, Section) and sub.volatile)
        mark = " *(volatile)*" if is_volatile else ""
        if sub is not None:
            listed = typing.get_origin(field.annotation) is list
            sections.append((f"{key}[]" if listed else key, sub, is_volatile, field.description or ""))
            kind = "list of sections" if listed else "section"
            rows.append(f"| `{key}` | {kind} | {_default(field)} | {field.description or ''}{mark} |")
            continue
        kind = _field_type(field).replace("|", "\\|")  # a bar would split the table cell
        rows.append(f"| `{key}` | `{kind}` | {_default(field)} | "
                    f"{(field.description or '').replace('|', '/')}{mark} |")
    return rows


def render() -> str:
    out = [HEADER, "## Stages and the sections that switch them on\n", "| stage | on when this section is set |",
           "|---|---|"]
    out += [f"| {stage} | `{section}` |" for stage, section in STAGE_SECTIONS.items()]
    out += ["| eval, export | any model stage (train, sft, align) is on |", ""]
    queue: list = [("", Config, False, "The run.")]
    while queue:
        key, model, volatile, description = queue.pop(0)
        nested: list = []
        title = f"`{key}`" if key else "Top level"
        doc = (model.__doc__ or "").strip() if model.__doc__ != BaseModel.__doc__ else ""
        out += [f"## {title}\n", description or doc, "", "| key | type | default | description |", "|---|---|---|---|"]
        out += _rows(model, f"{key}." if key else "", volatile, nested)
        out.append("")
        queue = nested + queue
    out += ["## Renamed keys\n", "Old configs keep working: these keys are moved before validation, with a warning.\n",
            "| old key | new key |", "|---|---|"]
    out += [f"| `{old}` | `{new}` |" for old, new in MOVES.items()]
    return "\n".join(out).rstrip() + "\n"


def undocumented(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Dotted keys without a description (the reference must explain every key)."""
    missing = []
    for name, field in model.model_fields.items():
        if not field.description:
            missing.append(prefix + name)
        sub = _sub_model(field.annotation)
        if sub is not None:
            missing += undocumented(sub, f"{prefix}{name}.")
    return missing


if __name__ == "__main__":  # pragma: no cover - exercised by the staleness test through render()
    sys.stdout.write(render())
