"""docs/config.md is generated from the schema; it must match and every key must be described."""

from pathlib import Path

from domaintune.config.docs import render, undocumented

DOC = Path(__file__).resolve().parents[3] / "docs" / "config.md"


def test_every_config_key_has_a_description():
    assert undocumented() == []


def test_committed_config_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/config.md is stale: regenerate it with `python -m domaintune.config.docs > docs/config.md`")
