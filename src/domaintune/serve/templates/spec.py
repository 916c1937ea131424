"""The schema of one prompt template file, validated strictly (one YAML file per template version)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domaintune.config.load import load_yaml_model

DEFAULT_SYSTEM = """\
{{ role }}
{%- for block in [task, output_format, chain_of_thought] if block %}{{ "\\n\\n" ~ block }}{% endfor %}
{%- if few_shot == "system" and examples %}{{ "\\n\\nExamples:" }}
{%- for ex in examples %}{{ "\\nInput: " ~ ex.input ~ "\\nOutput: " ~ ex.output }}{% endfor %}{% endif %}"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Example(_Strict):
    input: str
    output: str


class TemplateSpec(_Strict):
    """A template version. Text fields are Jinja (sandboxed, StrictUndefined) and see every other field."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1, description="Bump on every change: the id 'name@version' goes into the audit "
                                           "and the cache key, so old and new answers are never mixed.")
    language: str = Field("en", description="BCP-47 tag of the template's text (en, zh, ...).")
    description: str = ""
    role: str = Field(description="Who the model is (first line of the system message).")
    task: str = Field("", description="What to do with the user's input.")
    output_format: str = Field("", description="How the answer must be shaped.")
    chain_of_thought: str = Field("", description="Optional reasoning instruction; empty: none.")
    examples: list[Example] = Field(default_factory=list)
    few_shot: Literal["messages", "system", "none"] = Field(
        "messages", description="Examples as prior user/assistant turns, inside the system message, or unused.")
    variables: dict[str, str | list[str]] = Field(default_factory=dict,
                                                  description="Extra names the Jinja text may use.")
    system: str = Field(DEFAULT_SYSTEM, description="Jinja layout of the system message.")
    user: str = Field("{{ input }}", description="Jinja for the last user turn; `input` is the user's text.")

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @model_validator(mode="after")
    def _names_do_not_clash(self) -> TemplateSpec:
        reserved = {"role", "task", "output_format", "chain_of_thought", "examples", "few_shot", "input"}
        clash = reserved & set(self.variables)
        if clash:
            raise ValueError(f"variables: {sorted(clash)} are reserved names; rename them")
        return self


def read_template(path: Path) -> TemplateSpec:
    return load_yaml_model(path, TemplateSpec, what="prompt template")
