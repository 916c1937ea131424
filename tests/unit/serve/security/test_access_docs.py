"""The `serve:` snippets of docs/serve-access.md validate, so the walkthrough a user copies runs."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import yaml

from domaintune.config.base import BASE_DIR
from domaintune.config.serve import ServeConfig

DOC = Path(__file__).resolve().parents[4] / "docs" / "serve-access.md"


def _serve_blocks() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    parsed = [yaml.safe_load(b) for b in blocks]
    return [p["serve"] for p in parsed if isinstance(p, dict) and "serve" in p]


def test_the_serve_snippets_of_the_access_page_validate(tmp_path):
    blocks = _serve_blocks()
    assert len(blocks) >= 2  # the overview and the walkthrough
    (tmp_path / "keyring").write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n")
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: r, keywords: [x], action: refuse, message: not here}\n")
    for raw in blocks:
        settings = ServeConfig.model_validate(raw, context={BASE_DIR: tmp_path})
        assert settings.problems() == [], raw
