"""Every shipped example config loads against the schema, cross-field rules included, without a
warning (files are checked by the quickstart smoke test, which builds its data first)."""

import warnings
from pathlib import Path

import pytest

from domaintune.config import ConfigWarning, load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*/domaintune.yaml"))


def test_examples_exist():
    assert {p.parent.name for p in EXAMPLES} >= {"quickstart", "cpt-3stream"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_config_is_valid(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)  # no old key names, nothing that does nothing
        cfg = load_config(path)
    assert cfg.model_stages()
