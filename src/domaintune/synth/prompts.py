"""The synth prompt templates (prompt_templates/templates.yaml): rendering and a stable hash per template."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from domaintune.artifacts import stable_hash


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    text = (resources.files("domaintune.synth") / "prompt_templates" / "templates.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def template(name: str, lang: str) -> str:
    return table()[name][lang]


def template_hash(name: str, lang: str) -> str:
    return stable_hash({"version": table()["version"], "name": name, "text": template(name, lang)})[:16]


def render(name: str, lang: str, **values: str) -> str:
    return template(name, lang).format(**values)


def evol_operation(op: str, lang: str) -> str:
    return table()["evol_operations"][op][lang]
