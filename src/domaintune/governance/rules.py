"""The domain rules file: width and simplified/traditional conversion, regex rewrite rules and a
protected glossary (see `governance.normalize` and `governance.glossary` for what they do).

    width: half            # or full, none
    chinese: t2s           # or s2t, none
    glossary: [IC50, 海港银行]
    rewrites:
      - {pattern: '\\bFX\\b', replace: foreign exchange, lang: en}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domaintune.config.load import load_yaml_model
from domaintune.errors import ConfigError

DEFAULT_KEY = "data.rules_file"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewriteRule(_Strict):
    pattern: str = Field(description="Python regex.")
    replace: str = Field(description="Replacement; \\1 and \\g<name> refer to groups.")
    lang: str | None = Field(None, description="Apply only to documents identified as this language.")
    ignore_case: bool = False


class RulesFile(_Strict):
    width: Literal["none", "half", "full"] | None = None
    chinese: Literal["none", "t2s", "s2t"] | None = None
    glossary: list[str] = Field(default_factory=list)
    # groups of interchangeable terms (e.g. [保理融资, 应收账款保理业务]): synth's augment swaps them
    synonyms: list[list[str]] = Field(default_factory=list)
    rewrites: list[RewriteRule] = Field(default_factory=list)


def load_rules(path: str | Path, key: str = DEFAULT_KEY) -> RulesFile:
    """Read and check a rules file; `key` is the config key that named it (for error messages)."""
    path = Path(path)
    rules = load_yaml_model(path, RulesFile, key=key)
    problems = [f"glossary[{i}]: empty term" for i, t in enumerate(rules.glossary) if not t]
    problems += [f"synonyms[{i}]: a group needs at least two non-empty terms" for i, g in enumerate(rules.synonyms)
                 if len(g) < 2 or not all(g)]
    for i, rule in enumerate(rules.rewrites):
        try:
            re.compile(rule.pattern)
        except re.error as exc:
            problems.append(f"rewrites[{i}].pattern {rule.pattern!r}: {exc}")
    if problems:
        raise ConfigError(problems, source=str(path))
    return rules
