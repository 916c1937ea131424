"""The data stage's text steps: `data.normalize` settings plus the rules file (`data.rules_file`),
turned into record steps around the `governance.normalize` transforms.

Without a glossary each transform is its own step (lineage lists the ones that changed a record);
with one, a single `Protected` step runs them all with the terms masked.
"""

from __future__ import annotations

from collections.abc import Sequence

from domaintune.config import DataConfig
from domaintune.data.records import Record, Reject
from domaintune.data.steps import Step, TextStep
from domaintune.errors import ConfigError
from domaintune.governance.glossary import Glossary
from domaintune.governance.normalize import Normalizer, Transform, transforms
from domaintune.governance.rules import RulesFile, load_rules


class Protected:
    """Runs the transforms with the glossary terms masked; a transform that deletes or duplicates a
    protected term (a too-greedy rewrite rule) gets the record rejected, not silently damaged."""

    name = "rules.glossary"

    def __init__(self, glossary: Glossary, steps: Sequence[Transform]):
        self.steps = list(steps)
        self.normalizer = Normalizer(self.steps, glossary)

    def __call__(self, rec: Record) -> Record | Reject:
        out = self.normalizer(rec.text)
        rec.steps.extend(out.changed)
        if out.damaged:
            return Reject.of(rec, "rules.glossary_damaged",
                             f"step(s) {out.changed} deleted or repeated protected term(s) {out.damaged}; "
                             "fix the rewrite rule in data.rules_file that matches across them")
        rec.text = out.text
        return rec


def _option(data: DataConfig, rules: RulesFile | None, key: str) -> str:
    configured = getattr(data.normalize, key)
    from_file = getattr(rules, key, None) if rules else None
    if from_file in (None, "none") or from_file == configured:
        return configured
    if configured != "none":
        raise ConfigError([f"data.normalize.{key}={configured} conflicts with {key}: {from_file} in "
                           f"{data.rules_file}; set it in one place"])
    return from_file


def text_steps(data: DataConfig) -> list[Step]:
    """Normalization in order: unicode form, whitespace, width, Chinese script, rewrite rules;
    wrapped in glossary protection when the rules file lists protected terms."""
    rules = load_rules(data.rules_file, key="data.rules_file") if data.rules_file else None
    steps = transforms(data.normalize.unicode, data.normalize.whitespace, _option(data, rules, "width"),
                       _option(data, rules, "chinese"), rules.rewrites if rules else ())
    if rules and rules.glossary:
        return [Protected(Glossary(rules.glossary), steps)]
    return [TextStep(t) for t in steps]
