"""Fixtures for the data-stage tests: tiny files and configs written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from domaintune.config import Config, load_config
from domaintune.data.records import SourceContext


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def make_ctx(tmp_path):
    def make(fmt: str = "auto", **kw: Any) -> SourceContext:
        fields = {"index": 0, "name": "src", "label": "src", "stream": "s", "fmt": fmt,
                  "root": tmp_path, **kw}
        return SourceContext(**fields)
    return make


@pytest.fixture
def make_config(tmp_path):
    """Write a domaintune.yaml into tmp_path and load it like the CLI does."""
    def make(sources: list[dict[str, Any]], seed: int = 0, **data: Any) -> Config:
        streams = sorted({s["stream"] for s in sources})
        raw = {
            "name": "t",
            "runs_dir": "runs",
            "seed": seed,
            "model": {"base": "some/id"},
            "data": {"sources": sources, **data},
            "mix": {"mixture": {s: 1 for s in streams}, "tokens": 1000},
        }
        path = tmp_path / "domaintune.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        return load_config(path)
    return make


def docs(n: int, prefix: str = "doc") -> list[dict[str, Any]]:
    """n distinct rows, each long enough to pass the default min_chars."""
    return [{"text": f"{prefix} {i}: some ordinary text long enough to keep"} for i in range(n)]


@pytest.fixture
def make_docs():
    return docs
