"""`serve.auth`, `serve.limits` and `serve.rules`: API keys, per-key limits, the rule engine and review.

The rules file has its own schema here (not in serve/) so `domaintune validate` can check it
before anything starts, naming the file, the line and the key of each problem.
"""

from __future__ import annotations

import difflib
import importlib
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from domaintune.config.base import FilePath, Section


class AuthConfig(Section):
    db: FilePath = Field(description="SQLite file of API keys (created if absent). It stores only an HMAC of "
                                     "each secret, never the secret.")
    secret_file: FilePath = Field(description="The server secret the key HMACs are keyed with; created with mode "
                                              "0600 if absent, refused if group- or world-readable. Losing it "
                                              "invalidates every key.")


class LimitSet(Section):
    requests_per_minute: int | None = Field(None, ge=1, description="Generation requests per key per minute.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Tokens (prompt + max_tokens x n reserved, "
                                                                  "unused part refunded) per key per minute.")
    tokens_per_day: int | None = Field(None, ge=1, description="Tokens per key per UTC day.")
    concurrent: int | None = Field(None, ge=1, description="Generation requests in flight per key.")


class RulesConfig(Section):
    file: FilePath = Field(description="YAML rules evaluated before and after the model (docs/serve-access.md).")
    review_db: FilePath = Field(description="SQLite file of the human-review queue (created if absent).")
    held_message: str = Field("This answer is held for human review.",
                              description="What the caller gets instead of an answer a `hold` rule withheld.")

    def problems(self) -> list[str]:
        if not Path(self.file).is_file():
            return [f"serve.rules.file: file not found: {self.file}"]
        try:
            load_rules(self.file)
        except RulesError as err:
            return err.problems
        return []


# --------------------------------------------------------------------------- the rules file
class Rule(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Unique name, recorded in audit and review.")
    stage: Literal["input", "output", "both"] = Field("input", description="Check the request, the answer or both.")
    match: Literal["any", "all"] = Field("any", description="Fire when any (or all) of the conditions hold.")
    regex: list[str] = Field(default_factory=list, description="Python regexes (searched, case-insensitive).")
    keywords: list[str] = Field(default_factory=list, description="Case-insensitive substrings.")
    pii: list[str] = Field(default_factory=list, description="PII types of domaintune.governance (email, phone..).")
    min_chars: int | None = Field(None, ge=0, description="Fires when the text has at least this many characters.")
    max_chars: int | None = Field(None, ge=0, description="Fires when the text has more than this many characters.")
    classifier: str | None = Field(None, description="'module:function' taking the text, returning bool or score.")
    threshold: float = Field(0.5, description="A classifier score at or above this fires the rule.")
    action: Literal["refuse", "answer", "instruct", "review"] = Field(description="What a match does.")
    message: str | None = Field(None, description="refuse: the refusal; answer: the fixed answer; instruct: the "
                                                  "system instruction added; review: unused.")
    review: Literal["hold", "deliver"] = Field("hold", description="review: withhold the answer until a reviewer "
                                                                 "decides, or deliver it and flag it.")

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        problems = []
        if not (self.regex or self.keywords or self.pii or self.classifier
                or self.min_chars is not None or self.max_chars is not None):
            problems.append("the rule has no condition: give regex, keywords, pii, min_chars, max_chars or classifier")
        for i, rx in enumerate(self.regex):
            try:
                re.compile(rx)
            except re.error as err:
                problems.append(f"regex[{i}]: not a valid regex: {err}")
        if self.action in ("refuse", "answer", "instruct") and not self.message:
            problems.append(f"message: action '{self.action}' needs a message")
        if self.action == "instruct" and self.stage != "input":
            problems.append("stage: an instruction can only be added before the model (stage: input)")
        if self.classifier is not None:
            problems.extend(_classifier_problem(self.classifier))
        if self.pii:
            problems.extend(_pii_problem(self.pii))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RulesFile(Section):
    rules: list[Rule] = Field(default_factory=list, description="Evaluated in order.")

    @model_validator(mode="after")
    def _unique(self) -> RulesFile:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rules: duplicate rule names {dupes}")
        return self


def load_classifier(ref: str):
    module, _, attr = ref.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"{ref} is not callable")
    return fn


def _classifier_problem(ref: str) -> list[str]:
    if not re.fullmatch(r"[\w.]+:\w+", ref):
        return [f"classifier: '{ref}' must be 'module:function'"]
    try:
        load_classifier(ref)
    except (ImportError, AttributeError, TypeError) as err:
        return [f"classifier: cannot load '{ref}': {err}"]
    return []


def _pii_problem(types: list[str]) -> list[str]:
    from domaintune.governance.pii import builtin_detectors

    known = [d.type for d in builtin_detectors()]
    unknown = [t for t in types if t not in known]
    return [f"pii: unknown PII type(s) {unknown} (known: {', '.join(known)})"] if unknown else []


class RulesError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _line_of(node, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        elif isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == str(part)]
            if not match:
                return line
            node = match[0]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _message(error: dict) -> str:
    """'rules.2.keyword: unknown key (did you mean 'keywords'?)' (config.load's format, without importing it:
    config.load imports the schema, which imports this module)."""
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "(root)"
    if error["type"] == "extra_forbidden":
        fields = Rule.model_fields if len(loc) == 3 else RulesFile.model_fields
        close = difflib.get_close_matches(str(loc[-1]), sorted(fields), n=1, cutoff=0.6)
        return f"{where}: unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("input"), dict):  # a rule-level check: its messages start with the key
        return "; ".join(f"{where}.{p}" if re.match(r"^[a-z_][\w\[\]]*:", p) else f"{where}: {p}"
                         for p in msg.split("; "))
    return f"{where}: {msg} (got {error.get('input')!r:.80})"


def load_rules(path: str | Path) -> RulesFile:
    """The rules file, or RulesError whose problems read '<file>:<line>: rules[i].key: what to fix'."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        node, raw = yaml.compose(text), yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RulesError([f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: "
                          f"{getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise RulesError([f"{path}:1: the top level must be a mapping with a 'rules:' list"])
    try:
        return RulesFile.model_validate(raw)
    except ValidationError as err:
        messages = [_message(e) for e in err.errors()]
        lines = [_line_of(node, tuple(e["loc"])) for e in err.errors()]
        raise RulesError([f"{path}:{line}: {msg}" for line, msg in zip(lines, messages, strict=True)]) from None
