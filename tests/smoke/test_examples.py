"""Every shipped example config loads against the schema (files are checked by the quickstart
smoke test, which builds its data first)."""

from pathlib import Path

import pytest

from domaintune.checks import check_consistency
from domaintune.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*/domaintune.yaml"))


def test_examples_exist():
    assert {p.parent.name for p in EXAMPLES} >= {"quickstart", "cpt-3stream"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_config_is_valid(path):
    cfg = load_config(path)
    assert check_consistency(cfg) == []
