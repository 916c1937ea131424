"""The serve.tools section: kinds, names, allowlist defaults, path resolution, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from domaintune.config.serve_tools import FunctionTool, SqlTool, ToolsConfig
from domaintune.errors import ConfigError
from domaintune.serve.command import validate_settings, with_flags


def test_defaults_deny_by_default_and_every_field_is_documented():
    cfg = ToolsConfig(server=[{"name": "calc", "kind": "calculator"}])
    assert cfg.server[0].roles == ["admin"] and not cfg.server[0].auto and cfg.max_rounds == 4
    for model in (ToolsConfig, SqlTool, FunctionTool):
        assert all(f.description for f in model.model_fields.values()), model


def test_database_resolves_against_the_config_folder_and_survives_flag_revalidation(tmp_path):
    raw = {"tools": {"server": [{"name": "bank", "kind": "sql", "database": "data/bank.sqlite"}]}}
    settings = validate_settings(raw, tmp_path, "cfg.yaml")
    assert Path(settings.tools.server[0].database) == (tmp_path / "data/bank.sqlite").resolve()
    again = with_flags(settings, None, 9000)
    assert again.tools == settings.tools and again.port == 9000


@pytest.mark.parametrize("entry, fragment", [
    ({"name": "x", "kind": "shell"}, "tools.server.0"),
    ({"name": "bad name", "kind": "calculator"}, "not a valid tool name"),
    ({"name": "calc", "kind": "calculator", "database": "x.db"}, "database"),  # a key this kind does not use
    ({"name": "f", "kind": "function", "function": "m:f", "parameters": {"type": "string"}}, "type\": \"object"),
    ({"name": "f", "kind": "function", "parameters": {"type": "object"}}, "function"),
])
def test_bad_entries_name_the_key(tmp_path, entry, fragment):
    with pytest.raises(ConfigError) as err:
        validate_settings({"tools": {"server": [entry]}}, tmp_path, "cfg.yaml")
    assert fragment in str(err.value)


def test_tool_names_are_unique(tmp_path):
    entry = {"name": "calc", "kind": "calculator"}
    with pytest.raises(ConfigError, match="repeated: calc"):
        validate_settings({"tools": {"server": [entry, entry]}}, tmp_path, "cfg.yaml")
