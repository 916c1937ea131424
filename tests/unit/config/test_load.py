"""One YAML -> model loader: same error quality for the run config, rules files and task specs."""

import pytest

from domaintune.benchmarks.spec import read_spec
from domaintune.data.rules import load_rules
from domaintune.errors import ConfigError


def test_rules_file_unknown_key_gets_a_suggestion_and_dotted_path(tmp_path):
    p = tmp_path / "rules.yaml"
    p.write_text("glosary: [HV]\nrewrites:\n  - {pattern: a, replace: b, ignorecase: true}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_rules(p)
    assert "glosary: unknown key (did you mean 'glossary'?)" in err.value.problems
    assert "rewrites.0.ignorecase: unknown key (did you mean 'ignore_case'?)" in err.value.problems
    assert err.value.source == str(p)


def test_task_spec_yaml_errors_name_line_and_column(tmp_path):
    p = tmp_path / "task.yaml"
    p.write_text("name: t\nversion: 1\nkind: [generation\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        read_spec(p)
    p.write_text("name: t\nversion: 1\nkind: generation\nprompt: {template: x}\nchat_templat: true\n",
                 encoding="utf-8")
    with pytest.raises(ConfigError, match="chat_templat: unknown key \\(did you mean 'chat_template'\\?\\)"):
        read_spec(p)
    with pytest.raises(ConfigError, match="task file not found"):
        read_spec(tmp_path / "none.yaml")
